.PHONY: style quality test test-slow bench

style:
	ruff format .
	ruff check --fix .

quality:
	ruff format --check .
	ruff check .
	shellcheck launch/*.sh benchmarks/*.sh .ci/run

test:
	pytest

test-slow:
	pytest -m slow

bench:  # the CPU benchmarks; math_grader.py needs the bench extra (pip install -e ".[bench]")
	python benchmarks/verifier_throughput.py
	python benchmarks/math_grader.py
	python benchmarks/overhead.py
