# Two commands on a fresh machine:  `make demo` (set up + run end to end)  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-unit lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

# The demo starts its own local Ray unless RAY_ADDRESS names a cluster.
demo: export RAY_ADDRESS ?= local
demo: setup
	$(BIN)/python -m pipeline.demo_crawl data/demo-crawl
	$(BIN)/python jobs/build_dataset.py --config jobs/configs/demo.yaml

test: setup
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

# Re-resolve the full pin set after changing pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/webllm-lock && /tmp/webllm-lock/bin/pip install --quiet --upgrade pip
	/tmp/webllm-lock/bin/pip install --dry-run --quiet --report /tmp/webllm-lock.json -e '.[test,cloud]'
	$(PYTHON) -c "import json; r = json.load(open('/tmp/webllm-lock.json'))['install']; \
	pins = sorted(i['metadata']['name'].lower() + '==' + i['metadata']['version'].split('+')[0] for i in r if i['metadata']['name'] != 'webllm'); \
	open('requirements.lock', 'w').write('# Full transitive pins, resolved for Python 3.11 on linux x86_64. Regenerate with: make lock\n' + '\n'.join(pins) + '\n')"

clean:
	rm -rf data mlflow.db mlartifacts
