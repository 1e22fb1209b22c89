# Two commands on a fresh machine: `make run` (train the cart-pole through the full node graph) and `make test`.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export OMP_NUM_THREADS := 1

.PHONY: venv run test bench clean
venv: $(STAMP)
$(STAMP): requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: venv
	$(VENV)/bin/mfpg train $(ARGS)

test: venv
	$(VENV)/bin/python -m pytest -q test $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
