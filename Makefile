# `make demo` and `make test` set everything up on a fresh machine: they create or refresh .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests and demos use one torch thread per process: on 2 shared cores torch's default was
# measured 20x slower when the other core is busy.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

# The offline review corpus of `make demo-rlhf` (see ../shared/data/README.md).
RLHF_DATA ?= ../shared/data/imdb_reviews_offline.jsonl.gz

.PHONY: venv test test-slow demo demo-rlhf demo-rlvr bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $(STAMP)

# One pytest worker per CPU (at most 4), a test file per worker at a time (pytest-xdist): TEST_WORKERS=0 runs
# them in this process. The tests marked slow (minutes each, end to end) run in `make test-slow`; CI runs both.
TEST_WORKERS ?= logical
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile -m "not slow"

test-slow: venv
	$(PY) -m pytest -q -m slow

# PPO vs SPPO vs scaled PPO under training-reward noise: 9 CartPole runs, then the report and its table.
demo: venv
	$(VENV)/bin/symrl sweep sweeps/demo.yaml --workers 2
	$(VENV)/bin/symrl report runs/demo

# Offline RLHF on CPU: build the small models once (reused when present), PPO vs SPPO vs scaled PPO
# with 3 seeds, then the report (reward and KL curves, sample generations).
demo-rlhf: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/symrl lm prepare --data $(RLHF_DATA) --out models/imdb-offline
	HF_HUB_OFFLINE=1 $(VENV)/bin/symrl sweep sweeps/rlhf-demo.yaml --workers 2
	$(VENV)/bin/symrl report runs/imdb-offline
	@echo "report: runs/imdb-offline/report/report.md"

# Offline verifiable rewards on CPU: build the arithmetic LM once (reused when present); GRPO, its
# symmetric variants in both forms, the ratio form's control and the log-probability form's plain
# twin, on clean rewards and with 20% of them flipped, 2 seeds; then the report (held-out accuracy
# curves, IQM, probability of improvement).
demo-rlvr: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/symrl lm prepare --task arithmetic
	HF_HUB_OFFLINE=1 $(VENV)/bin/symrl sweep sweeps/rlvr-demo.yaml --workers 2
	$(VENV)/bin/symrl report runs/rlvr-demo
	@echo "report: runs/rlvr-demo/report/report.md"

bench: venv
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) runs bench/results models
