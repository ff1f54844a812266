# imageblur: one Makefile for install, run and test. Role-specific targets live in mk/*.mk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-libs browser axe run test lint typecheck unit model int8-model lock clean promtool

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt scripts/fetch_model.py scripts/fetch_test_models.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python scripts/fetch_model.py
	$(BIN)/python scripts/fetch_test_models.py
	touch $(STAMP)

# Two installs at once (two clones on one machine) take turns on the package lists
# instead of failing on apt's lock.
APT_GET = flock /tmp/imageblur-apt.lock env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

install: system-libs $(STAMP) browser  ## create .venv with the package, every back end, the dev tools and the model

# libjpeg-turbo's TurboJPEG library (Debian: libturbojpeg0): JPEGs are patched block by
# block with it (src/imageblur/jpeg_coefficients.py). Installed when missing; without
# root it only warns (JPEGs are then re-encoded whole, and the tests of the patch fail).
system-libs:  ## Debian's libturbojpeg0, installed when missing (needs root)
	@$(PYTHON) -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('turbojpeg'))" || \
	if [ "$$(id -u)" -ne 0 ]; then \
	    echo "warning: JPEG patching needs libturbojpeg0: run 'make system-libs' as root"; \
	else \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq \
	        --no-install-recommends libturbojpeg0 >/dev/null; \
	fi

# The browser tests (tests/browser) drive Debian's Chromium through its ChromeDriver:
# installed from the distribution when missing, never downloaded by a test tool.
# Without root (a developer's own machine) it only warns: `make run` needs no browser.
browser:  ## Debian's chromium and chromium-driver, installed when missing (needs root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	if [ "$$(id -u)" -ne 0 ]; then \
	    echo "warning: tests/browser needs chromium and chromium-driver: run 'make browser' as root"; \
	else \
	    echo "installing chromium and chromium-driver (for tests/browser)"; \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq \
	        --no-install-recommends chromium chromium-driver >/dev/null; \
	fi

# axe-core, the accessibility checker tests/browser/test_accessibility.py injects into the
# page: from the npm registry at the version and hash of tests/browser/axe/package-lock.json,
# into build/ (never served by the page). npm comes from Debian when missing (needs root).
AXE := build/axe/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/axe/package.json tests/browser/axe/package-lock.json
	@command -v npm >/dev/null || { $(APT_GET) update -qq && \
	    $(APT_GET) install -y -qq --no-install-recommends npm >/dev/null; }
	mkdir -p build/axe && cp tests/browser/axe/package.json tests/browser/axe/package-lock.json build/axe/
	cd build/axe && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(AXE)

axe: $(AXE)  ## axe-core for the accessibility browser tests (npm; Debian's npm when missing)

model: $(STAMP)  ## (re)fetch and verify the face model
	$(BIN)/python scripts/fetch_model.py

# The int8 model is stored in the repository (src/imageblur/models/centerface-int8.*,
# hashes pinned in detection/centerface.py); this remakes it with NNCF in a throwaway
# environment, so neither .venv nor the container image ever holds NNCF.
int8-model: $(STAMP)  ## remake the shipped int8 face model with NNCF (maintainers; then pin its hashes)
	rm -rf .venv-quantize && $(PYTHON) -m venv .venv-quantize
	.venv-quantize/bin/python -m pip install --quiet -c constraints.txt -e . nncf==3.4.0
	.venv-quantize/bin/python scripts/quantize_model.py
	rm -rf .venv-quantize

run: install  ## serve the embedded default (API + worker, SQLite, local folder) on IMAGEBLUR_PORT
	$(BIN)/imageblur serve

lint: install  ## ruff
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: install  ## mypy strict on the package
	$(BIN)/mypy

# The alert rules' tests (tests/deploy/test_alerts.py) need promtool.
promtool:  ## install promtool (Debian's prometheus package) when missing
	@command -v promtool >/dev/null || { $(APT_GET) update && \
	    $(APT_GET) install -y --no-install-recommends prometheus; }

test: install promtool axe lint typecheck  ## every test: lint, types, unit, contract, end-to-end
	$(BIN)/python -m pytest -n 2 --dist loadfile

lock:  ## refresh constraints.txt from a clean install of the newest allowed versions
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ head -2 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^imageblur'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
