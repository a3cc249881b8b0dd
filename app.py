"""Entry point for `make app` and for a Hugging Face Space (`app_file: app.py`, run as a script)."""

from reasonapp.ui.app import main

if __name__ == "__main__":
    main()
