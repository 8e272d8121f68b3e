# make demo : set everything up (a Python 3.10 venv with Lava) and run the end-to-end demo on digits (again: --force
#             overwrites the previous run's artifacts in $(OUT))
# make test : set everything up and run the test suite
VENV ?= .venv
OUT  ?= runs/demo
DEMO_ARGS ?=

.PHONY: setup demo test test-fast clean
setup:
	@VENV=$(VENV) scripts/setup_venv.sh

demo: setup
	$(VENV)/bin/snntc demo --out $(OUT) --json $(OUT)/demo.json --force $(DEMO_ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
