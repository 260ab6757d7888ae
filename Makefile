# Playground: `make run` serves the site, `make test` runs every test. Both start from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: run run-services worker test lint lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	touch $@

$(VENV)/.dev-deps: requirements-dev.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@ $(VENV)/.run-deps

## run: embedded mode (SQLite, in-process engine), or services mode when DATABASE_URL and
## REDIS_URL are set (then start workers with `make worker`).
run: $(VENV)/.run-deps
	$(BIN)/python manage.py migrate --noinput -v 0
	@echo "Playground is running at http://$(HOST):$(PORT)/"
	$(BIN)/daphne -b $(HOST) -p $(PORT) playground.asgi:application

## run-services: daphne plus one engine worker, on DATABASE_URL and REDIS_URL.
run-services: $(VENV)/.run-deps
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || (echo "set DATABASE_URL and REDIS_URL" && exit 2)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py worker & trap 'kill %1' EXIT; \
	echo "Playground is running at http://$(HOST):$(PORT)/"; \
	$(BIN)/daphne -b $(HOST) -p $(PORT) playground.asgi:application

## worker: an engine worker taking every queue, or only QUEUES (e.g. `make worker QUEUES=image,video`).
worker: $(VENV)/.run-deps
	$(BIN)/python manage.py worker $(if $(QUEUES),--queues $(QUEUES))

test: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/python manage.py check
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.dev-deps
	$(BIN)/python bench/latency.py --mode both
	$(BIN)/python bench/throughput.py --mode both

clean:
	rm -rf $(VENV) var
