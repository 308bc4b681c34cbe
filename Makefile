# The two commands of the README: `make install` and `make test`.
PYTHON ?= python3
DEBIAN_PACKAGES = prometheus prometheus-alertmanager chromium docker.io debootstrap docker-compose

.PHONY: install test test-quick typecheck lint bench

install:  ## everything: Debian peers used by the tests, then devbox with its dev extras
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	$(PYTHON) -m pip install -q -e '.[dev]'

test:  ## the whole suite, as CI runs it (lint, type check, then every test including slow peer tests)
	ruff check .
	$(MAKE) typecheck
	$(PYTHON) -m pytest -p no:cacheprovider -q

# mypy sees the package as it installs: mocks/ is devbox.mocks. A tree of symlinks under build/
# gives it that layout (reported paths read devbox/..., devbox/mocks/...); settings in pyproject.toml.
TYPECHECK = build/typecheck
typecheck:  ## mypy: baseline for the package, strict for devbox.platform, devbox.polaris, devbox.assembly
	@rm -rf $(TYPECHECK)/devbox && mkdir -p $(TYPECHECK)/devbox
	@for entry in devbox/*; do ln -s "$(CURDIR)/$$entry" $(TYPECHECK)/devbox/; done
	@ln -s "$(CURDIR)/mocks" $(TYPECHECK)/devbox/mocks
	cd $(TYPECHECK) && $(PYTHON) -m mypy --config-file "$(CURDIR)/pyproject.toml"

test-quick:  ## skip the slow peer tests (real prometheus, amtool, chromium, go)
	$(PYTHON) -m pytest -q -m "not slow"

bench:
	$(PYTHON) bench/run_all.py
