# The two commands of the README. Each creates .venv and installs into it when
# pyproject.toml changed, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
RATE   ?= 200

.PHONY: run test demo bench clean tools

# Prometheus Alertmanager (Debian package) for the alert delivery tests; installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)  ## the service on embedded defaults, with a simulated feed of RATE events/s
	$(VENV)/bin/cxstream run --simulate $(RATE)

tools:
	@command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || { \
	  echo "installing prometheus-alertmanager (Debian package) for the alert delivery tests"; \
	  $(SUDO) apt-get install -y -q prometheus-alertmanager >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q prometheus-alertmanager >/dev/null; }; }

test: $(STAMP) tools  ## unit, integration (real broker + chDB + Alertmanager) and end-to-end tests
	$(VENV)/bin/python -m pytest

demo: $(STAMP)
	$(VENV)/bin/cxstream demo --events 20000 --seed 1

bench: $(STAMP)
	$(VENV)/bin/cxstream bench ingest --events 200000

clean:
	rm -rf $(VENV) .cxstream .pytest_cache
