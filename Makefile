# make demo   venv + install + weights + convert ../shared/photos into out/
# make test   same set-up, then the whole test suite
# make fuzz   the probe/decode fuzzer at full strength (2,000 examples)
# make bench  speed and memory figures (not a test): photos, styles, video, scale-out
SHARED  ?= ../shared
WEIGHTS ?= $(SHARED)/weights
PHOTOS  ?= $(SHARED)/photos
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# The CPU build of torch: a plain `torch` requirement pulls a multi-GB CUDA build.
# Where pip has no local CPU wheel, TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH   ?= torch==2.13.0
TORCH_INDEX ?=
# Optional features are real features: tests cover HEIC input, video, the Ray runner and the server.
EXTRAS  ?= heic,video,ray,serve

.PHONY: demo test test-fast fuzz bench weights install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(TORCH_INDEX) "$(TORCH)"
	$(PIP) install -q --disable-pip-version-check -e ".[test,$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

weights: install
	$(PY) -m anime_cli.weights $(WEIGHTS) weights

demo: weights
	$(VENV)/bin/anime-cli convert $(PHOTOS) -o out --overwrite --log-file out/run.jsonl

test: weights
	$(PY) -m pytest -q

test-fast: weights
	$(PY) -m pytest -q -m "not slow"

fuzz: weights
	ANIME_CLI_FUZZ=full $(PY) -m pytest -q tests/test_fuzz.py

bench: weights
	$(PY) bench/bench.py
	$(PY) bench/styles.py
	$(PY) bench/threads.py
	$(PY) bench/video.py
	$(PY) bench/scale.py

clean:
	rm -rf $(VENV) out anime-out .pytest_cache
