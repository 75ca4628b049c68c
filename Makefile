# Two commands on a fresh machine:  `make demo` (set up + run end to end)  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-unit lock clean kubectl

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,cloud,eval]'
	touch $@

# The demo: build the dataset -> pretrain on its token shards -> generate. Each step starts its own
# local Ray unless RAY_ADDRESS names a cluster; MLflow goes to ./mlflow.db unless MLFLOW_TRACKING_URI is set.
DEMO_MODEL := data/runs/pretrain-demo/checkpoint-00000080/model
demo: export RAY_ADDRESS ?= local
demo: setup
	$(BIN)/python -m pipeline.demo_crawl data/demo-crawl
	$(BIN)/python jobs/build_dataset.py --config jobs/configs/demo.yaml
	$(BIN)/python jobs/pretrain.py --config jobs/configs/pretrain-demo.yaml
	@echo "--- a sample from the demo model:"
	$(BIN)/python jobs/generate.py --checkpoint $(DEMO_MODEL) --prompt "The best way to" \
	    --max-new-tokens 40 --temperature 0.8 --top-k 50 --seed 0
	@echo "--- where to look:"
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db  (http://127.0.0.1:5000;"
	@echo "  experiments 'dataset-builds' and 'pretraining', registered model 'webllm-demo')"
	@echo "Instruction tuning, where pretraining pays (benchmarks/RESULTS.md): a base pretrained on the shared"
	@echo "corpus's English, fine-tuned, against the same from a random init; compare their val_bpb:"
	@echo "  $(BIN)/python jobs/build_dataset.py --config jobs/configs/english.yaml"
	@echo "  $(BIN)/python jobs/pretrain.py --config jobs/configs/pretrain-english.yaml"
	@echo "  $(BIN)/python jobs/finetune_instruct.py --config jobs/configs/finetune-instruct-demo.yaml --set model.init_from=data/runs/pretrain-english"
	@echo "  $(BIN)/python jobs/finetune_instruct.py --config jobs/configs/finetune-instruct-demo.yaml --set run.name=finetune-instruct-random-init"
	@echo "  (or from the demo model: --set model.init_from=data/runs/pretrain-demo)"
	@echo "Fine-tune the demo model as a spam classifier:"
	@echo "  $(BIN)/python jobs/finetune_classifier.py --config jobs/configs/finetune-classifier-demo.yaml --set model.init_from=data/runs/pretrain-demo"
	@echo "Serve the demo model behind an OpenAI-compatible API, with a chat page at http://127.0.0.1:8000/:"
	@echo "  $(BIN)/python jobs/serve.py --model data/runs/pretrain-demo"
	@echo "  curl http://127.0.0.1:8000/v1/completions -d '{\"model\": \"pretrain-demo\", \"prompt\": \"The best way to\", \"max_tokens\": 32}'"
	@echo "  from openai import OpenAI; OpenAI(base_url=\"http://127.0.0.1:8000/v1\", api_key=\"unused\").completions.create(model=\"pretrain-demo\", prompt=\"The best way to\")"
	@echo "  or from the registry: $(BIN)/python jobs/serve.py --model models:/webllm-demo/1"

# The chat page's browser test drives Debian's Chromium: Playwright never downloads a browser.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# `kubectl kustomize` builds the Kubernetes manifests in the tests: any kubectl on the PATH, else Debian's.
kubectl:
	@command -v kubectl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null)

test: setup $(CHROMIUM) kubectl
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

# Re-resolve the full pin set after changing pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/webllm-lock && /tmp/webllm-lock/bin/pip install --quiet --upgrade pip
	/tmp/webllm-lock/bin/pip install --dry-run --quiet --report /tmp/webllm-lock.json -e '.[test,cloud,eval]'
	$(PYTHON) -c "import json; r = json.load(open('/tmp/webllm-lock.json'))['install']; \
	pins = sorted(i['metadata']['name'].lower() + '==' + i['metadata']['version'].split('+')[0] for i in r if i['metadata']['name'] != 'webllm'); \
	open('requirements.lock', 'w').write('# Full transitive pins, resolved for Python 3.11 on linux x86_64. Regenerate with: make lock\n' + '\n'.join(pins) + '\n')"

clean:
	rm -rf data mlflow.db mlartifacts
