"""The Gradio app. Only this package imports gradio; it calls the library for everything it does."""
