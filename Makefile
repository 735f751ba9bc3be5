# The two commands of README.md. Everything the project needs is installed from here.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

.PHONY: install demo test test-tools
install: $(VENV)/.installed

## Run the main job on the embedded default (SQLite, local folder, simulated survey).
demo: install
	$(VENV)/bin/astrid demo

## System tools the tests drive (Debian packages): docker-compose (validates docker-compose.yaml),
## chromium and chromium-driver (the UI test drives the webserver in headless Chromium). Installs only what is missing.
test-tools:
	@missing=""; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	[ -z "$$missing" ] || { \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

## Install and run the whole test suite (pytest exit 5, "no tests", fails like any other error).
test: install test-tools
	$(VENV)/bin/ruff check astrid_assets astrid_assets_tests benchmarks
	$(VENV)/bin/pytest
