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
	@# devbox-base:bookworm (Debian by debootstrap, python3, the shop's packages) on the tests' Docker engine:
	@# minutes, once; not in `make test`. No engine, or a failed build: said, and the tests needing it skip.
	-$(PYTHON) -m tests.docker_images base
	@# polaris-go from the Go module proxy, compiled into Go's build cache: the two polaris-go tests then link
	@# their probe in ~1 s, where a cold cache compiled it for 55-80 s of a test worker on a fresh machine
	@if command -v go >/dev/null; then (cd tests/integration/naming_polaris_go && GOTOOLCHAIN=local \
	  GOFLAGS="-mod=mod -buildvcs=false" timeout 900 go build -o /dev/null .) \
	  || echo "polaris-go not built: test_naming_server_polaris_go builds it or says why it fails"; fi
	@# polaris-java and Maven's plugins into ~/.m2, so test_naming_polaris_java builds its probe offline
	@if command -v mvn >/dev/null; then mvn -B -q dependency:go-offline -f tests/peers/polaris-java/pom.xml \
	  || echo "polaris-java not fetched: test_naming_polaris_java fetches it or says why it skips"; fi

# pytest-xdist workers: one more than the machine has cores. The suite is CPU-bound on two cores (idle:
# 135 % CPU, vmstat 1-15 % idle throughout), and beside a CPU hog a third worker also takes a larger share
# of the machine: 7:59 against 10:37-10:59 with two (hog23-25), once the suite's own CPU was cut (each
# `httpx.get` of a test loaded the CA bundle, 45 ms; tracing's child processes imported pydantic). A third
# worker was tried before those cuts and failed timing-bound tests 1 run in 3 (a latency budget, /healthz
# p99 under saturated ingest, an alert re-firing): since then the budget runs one instance a service, the
# /healthz test has a control, and `make test WORKERS=2` is there for a machine where three are too many.
# --dist loadscope keeps each module on one
# worker, so a module-scoped fixture (a deployed shop, a seeded platform) starts once, not once per
# worker. Every test listens on port 0, so workers never collide. pytest exits 5 when it ran no test:
# make (and CI) fail on it like on any other non-zero exit. --no-loadscope-reorder: xdist would
# otherwise hand out scopes by their number of tests, so the one-test scopes that take minutes (the
# shop's scenario suite, the tour) started last and were the run's tail; tests/conftest.py orders
# them longest first instead.
WORKERS ?= $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)) + 1)")
PYTEST_PARALLEL = -n $(WORKERS) --dist loadscope --no-loadscope-reorder
# This machine's environment sets PYTHONDONTWRITEBYTECODE=1: then every import compiles from source,
# and pytest re-rewrites the asserts of all ~400 devbox modules (the package is a pytest plugin) in
# each worker and every run; the CLI subprocesses of the e2e tests compile everything again each
# time. Collecting took 80 s on a busy machine, 4 s with bytecode kept (under build/, not in the tree).
PYTEST = env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX="$(CURDIR)/build/pycache" $(PYTHON) -m pytest

test:  ## the whole suite, as CI runs it (lint, type check, then every test including slow peer tests)
	ruff check .
	$(MAKE) typecheck
	$(PYTEST) -p no:cacheprovider -q $(PYTEST_PARALLEL) --durations=25

# mypy sees the package as it installs: mocks/ is devbox.mocks. A tree of symlinks under build/
# gives it that layout (reported paths read devbox/..., devbox/mocks/...); settings in pyproject.toml.
TYPECHECK = build/typecheck
typecheck:  ## mypy: baseline for the package, strict for devbox.platform, devbox.polaris, devbox.assembly
	@rm -rf $(TYPECHECK)/devbox && mkdir -p $(TYPECHECK)/devbox
	@for entry in devbox/*; do ln -s "$(CURDIR)/$$entry" $(TYPECHECK)/devbox/; done
	@ln -s "$(CURDIR)/mocks" $(TYPECHECK)/devbox/mocks
	cd $(TYPECHECK) && $(PYTHON) -m mypy --config-file "$(CURDIR)/pyproject.toml"

# The quick subset, with the same workers as make test (a worker more than cores; their timing is not
# what they assert): idle, 167 s with two workers, 132 s with three, 113 s with three once the eight
# 5-8 s tests of real processes were marked slow (they run in `make test`), 97 s once tests stopped
# loading the CA bundle on every request (tests/httpc.py).
test-quick:  ## in-process tests only: not the slow ones (real peers, a deployed shop, load runs) nor the CLI e2e subprocesses; under 2 minutes
	$(PYTEST) -p no:cacheprovider -q -n $(WORKERS) --dist loadscope --no-loadscope-reorder \
	  -m "not slow and not e2e" --durations=15

bench:
	$(PYTHON) bench/run_all.py
