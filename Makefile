# The two commands of the README: `make install` and `make test`.
PYTHON ?= python3
DEBIAN_PACKAGES = prometheus prometheus-alertmanager chromium

.PHONY: install test test-quick lint bench

install:  ## everything: Debian peers used by the tests, then devbox with its dev extras
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	$(PYTHON) -m pip install -q -e '.[dev]'

test:  ## the whole suite, as CI runs it (lint, then every test including slow peer tests)
	ruff check .
	$(PYTHON) -m pytest -p no:cacheprovider -q

test-quick:  ## skip the slow peer tests (real prometheus, amtool, chromium, go)
	$(PYTHON) -m pytest -q -m "not slow"

bench:
	$(PYTHON) bench/run_all.py
