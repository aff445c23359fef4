# kvmd: `make test` and `make run` do all set-up themselves on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all deps host venv guest test test-fast run stop bench lint clean

all: test

host:
	.ci/host-setup.sh

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,libvirt]'
	touch $(STAMP)

venv: host $(STAMP)

deps: venv guest

guest: host
	tests/guest/build.sh

test: deps
	$(VENV)/bin/pytest -q

test-fast: deps
	$(VENV)/bin/pytest -q -m "not slow"

# The demo guest runs under TCG unless KVMD_ACCEL says otherwise: nested /dev/kvm on
# these hosts hangs Linux guests early in boot (DESIGN.md).
run: deps
	KVMD_ACCEL=$${KVMD_ACCEL:-tcg} $(PY) -m kvmd.demo --kernel build/guest/vmlinuz \
	    --initrd build/guest/initramfs.img --cmdline "$$(cat build/guest/cmdline)"
	$(PY) -m vdsm.demo

stop:
	-$(PY) -m vdsm.demo --stop
	$(PY) -m kvmd.demo --stop

# every benchmark (about 10 minutes here); the table in build/bench/report.md, the chart
# in build/bench/report.png (bench/report.py)
bench: deps
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/report.py

lint: venv
	$(VENV)/bin/pip install -q ruff
	$(VENV)/bin/ruff check kvmd compat vdsm hooks tests bench

clean:
	rm -rf build $(VENV) *.egg-info .pytest_cache .hypothesis
