# d-ar developer entry points. `make sample` and `make test` are the two README commands.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install serve-install test test-serve test-gpu sample bench lint style demo-train dart-train clean

install: $(STAMP)

# torch first and pinned: the CPU build of 2.13.0 is on local disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,demo]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The `serve` extra (GGUF export, llama.cpp sampling). llama-cpp-python builds llama.cpp from source: ~10 min
# wall on a loaded 2-core machine (593 s CPU). GGML_NATIVE=OFF gives a portable AVX2/FMA/F16C build instead of
# -march=native, so a wheel that pip caches on one machine runs on another CPU; LLAVA_BUILD=OFF skips the
# multimodal library we do not use. (pip's wheel cache is keyed on the sdist, not on CMAKE_ARGS.)
SERVE_STAMP := $(VENV)/.installed-serve
$(SERVE_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PY) -m pip install -q -e ".[dev,demo,serve]"
	touch $(SERVE_STAMP)

serve-install: $(SERVE_STAMP)

test-serve: $(SERVE_STAMP)
	$(PY) -m pytest -q tests/llama_ar/test_gguf.py

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests

sample: $(STAMP)
	$(VENV)/bin/dar sample --out outputs
	$(VENV)/bin/dar stream --out outputs
	$(VENV)/bin/dar sample --checkpoint checkpoints/dart-animals --prefix dart_ --out outputs
	$(VENV)/bin/dar stream --checkpoint checkpoints/dart-animals --prefix dart_ --out outputs

# BENCH_ARGS: e.g. "--quick" (<= 2 min), "--threads 1" (steadier on a machine other jobs load), "--only ar".
# Set DAR_OFFICIAL_REPO to a showlab/D-AR checkout to time the official code in the same run.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m dar.bench --out bench/results.json $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check dar tokenizer llama_ar dart recipes tests
	$(VENV)/bin/ruff format --check dar tokenizer llama_ar dart recipes tests

style: $(STAMP)
	$(VENV)/bin/ruff check --fix dar tokenizer llama_ar dart recipes tests
	$(VENV)/bin/ruff format dar tokenizer llama_ar dart recipes tests

# `accelerate launch --cpu` without --num_processes sets OMP_NUM_THREADS=1 (accelerate 1.x, measured here):
# give the single process every core (demo tokenizer: 0.85 steps/s on one thread vs 1.3 on two, this machine).
DEMO_LAUNCH = $(VENV)/bin/accelerate launch --cpu --num_cpu_threads_per_process $$(nproc)

demo-train: $(STAMP)
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage2.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage3.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage4.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage5.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage6.yaml
	$(DEMO_LAUNCH) recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer_stage7.yaml
	$(DEMO_LAUNCH) recipes/extract_codes.py --config recipes/configs/demo_codes.yaml
	$(DEMO_LAUNCH) recipes/train_llama_ar.py --config recipes/configs/demo_ar.yaml
	rm -rf checkpoints/dar-animals && cp -r runs/demo_ar/export/pipeline checkpoints/dar-animals

# The shipped DART demo (checkpoints/dart-animals): one recipe in two stages (the second continues the first's
# export), EMA weights exported with the class names.
dart-train: $(STAMP)
	$(DEMO_LAUNCH) recipes/train_dart.py --config recipes/configs/demo_dart.yaml
	$(DEMO_LAUNCH) recipes/train_dart.py --config recipes/configs/demo_dart_stage2.yaml
	rm -rf checkpoints/dart-animals && cp -r runs/demo_dart2/export/pipeline checkpoints/dart-animals

clean:
	rm -rf $(VENV) .pytest_cache
