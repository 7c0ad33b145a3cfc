# grpo_ext's commands. `make demo` and `make test` set up a fresh machine first (scripts/setup.sh: torch, the package,
# bubblewrap), and do nothing more the second time. The active virtual environment is used, else ./.venv.
VENV ?= .venv
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(VENV)/bin/python)
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup demo test test-slow quality style docs docs-serve bench

setup:
	VENV=$(VENV) bash scripts/setup.sh

demo: setup  # the README's first run: a warm start, then 25 GRPO steps, on the CPU
	$(PY) -m grpo_ext.sft experiment=arithmetic_proof hardware=cpu logger=none hydra.run.dir=outputs/warm_start
	$(PY) -m grpo_ext.train experiment=arithmetic_proof hardware=cpu logger=none model.path=outputs/warm_start/final_model trainer.max_steps=25

test: setup  # the default tier
	$(PY) -m pytest

test-slow: setup  # the slow tier: the docs' commands as written, learning runs, several processes, sweeps
	$(PY) -m pytest -m slow

quality:
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m mkdocs build --strict --quiet --site-dir site
	@if command -v shellcheck >/dev/null; then shellcheck launch/*.sh benchmarks/*.sh scripts/*.sh .ci/run; \
	else echo "shellcheck is not installed: the shell scripts were not checked"; fi

style:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

docs:
	$(PY) -m mkdocs build --strict --site-dir site

docs-serve:
	$(PY) -m mkdocs serve

bench:  # the CPU benchmarks
	$(PY) benchmarks/verifier_throughput.py
	$(PY) benchmarks/math_grader.py
	$(PY) benchmarks/overhead.py
