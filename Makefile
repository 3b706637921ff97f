# The README's two commands: `make run` (the main job) and `make test` (the test suite).
# Both create the virtualenv .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/experiment1

.PHONY: run test test-slow lint benchmarks clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,report,slurm]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/gssm-experiment1 --config=experiment1:size=cpu --workdir=$(WORKDIR)

# Two pytest workers (pytest-xdist), one per core of the CI machine: most tests are single-threaded
# compilation, so two processes share the suite; a file's tests stay on one worker (the docs test, the
# longest, has its benchmark commands in a file of their own).
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/.installed
	$(BIN)/ruff check .

benchmarks: $(BIN)/.installed
	$(BIN)/python -m benchmarks.sampler
	$(BIN)/python -m benchmarks.forward
	$(BIN)/python -m benchmarks.train_step
	$(BIN)/python -m benchmarks.learners
	$(BIN)/python -m benchmarks.accelerator
	$(BIN)/python -m benchmarks.sweep
	$(BIN)/python -m benchmarks.data
	$(BIN)/python -m benchmarks.calibration

clean:
	rm -rf $(VENV) *.egg-info
