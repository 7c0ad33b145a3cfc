.PHONY: style quality test test-slow

style:
	ruff format .
	ruff check --fix .

quality:
	ruff format --check .
	ruff check .
	shellcheck launch/*.sh .ci/run

test:
	pytest

test-slow:
	pytest -m slow
