# Image-deduplication service. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/server:$(CURDIR)/clients/python:$(CURDIR)
# ResNet-50 (torchvision ImageNet weights) is the production model: give its file here when you
# have it, e.g. `make model RESNET50_WEIGHTS=~/resnet50-0676ba61.pth`. Without it, the offline
# fallback (EfficientNet-Lite0) is built and the service says so loudly.
RESNET50_WEIGHTS ?= $(DEDUP_RESNET50_WEIGHTS)
MODEL_STAMP := triton_models/embedder/1/model.onnx

.PHONY: help setup etcd browser-setup model run test test-unit test-integration fuzz eval bench bench-scale load chaos lint deploy-check proto proto-check clients-setup clients-build clients-examples clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,model,dev,eval]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (pinned)

# `make run` starts an etcd (the fronts' write coordinator) unless it joins one or is told DEDUP_ETCD=off.
RUN_ETCD := $(if $(filter off OFF,$(DEDUP_ETCD)),,$(if $(DEDUP_ETCD_ENDPOINTS),,etcd))
etcd: ## install Debian's etcd-server when missing (apt: root or sudo); make run and make test need it
	scripts/etcd-setup.sh

browser-setup: ## install Debian's chromium when missing (apt: root or sudo); the gallery's browser tests drive it
	scripts/browser-setup.sh

model: $(STAMP) ## build the Triton model repository from real weights (ResNet-50, else EfficientNet-Lite0)
	$(PY) -m dedup_modelbuild --repository triton_models $(if $(RESNET50_WEIGHTS),--resnet50-weights $(RESNET50_WEIGHTS))

$(MODEL_STAMP): | $(STAMP)
	$(MAKE) model

run: $(STAMP) $(MODEL_STAMP) $(RUN_ETCD) ## install, then run Triton + Milvus + etcd + the gRPC front in the foreground (Ctrl-C stops all); prints the `join:` line for a second front
	$(PY) -m dedup_stack

test: $(STAMP) $(MODEL_STAMP) etcd browser-setup ## install, then run every test (unit + integration against real Triton and Milvus)
	$(PY) -m pytest tests -q

test-unit: $(STAMP) ## unit tests only (no backends)
	$(PY) -m pytest tests/unit -q

test-integration: $(STAMP) $(MODEL_STAMP) etcd browser-setup ## integration tests only
	$(PY) -m pytest tests/integration -q

FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP) ## fuzz the decoder and request validation longer than make test does (FUZZ_EXAMPLES per property)
	DEDUP_FUZZ_PROFILE=fuzz DEDUP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/unit/test_fuzz.py -q --hypothesis-show-statistics

EVAL_ARGS ?= $(if $(CALIBRATE),--calibrate) $(if $(DEDUP_TARGET),--target $(DEDUP_TARGET)) $(if $(REQUIRE_TARGETS),--require-targets)
eval: $(STAMP) $(MODEL_STAMP) ## duplicate-decision quality through the gRPC API (CALIBRATE=1 also sets the default threshold)
	$(PY) -m dedup_eval $(EVAL_ARGS)

bench: $(STAMP) $(MODEL_STAMP) ## throughput/latency on real JPEGs, its own stack (~6 min): table, then one JSON line (BENCH_ARGS="--images 300")
	$(PY) -m dedup_bench $(BENCH_ARGS)

bench-scale: $(STAMP) $(MODEL_STAMP) ## 1M vectors on a Milvus of its own: insert, build, memory, latency, hit@1 per index, groups; table then one JSON line (BENCH_SCALE_ARGS="--vectors 100000")
	$(PY) -m dedup_bench_scale $(BENCH_SCALE_ARGS)

load: $(STAMP) $(MODEL_STAMP) ## 32 clients mix CheckDuplicate and IndexStream for 60 s on a stack of their own (LOAD_ARGS="--overload", "--target host:port", "--duration 15")
	$(PY) -m dedup_load $(LOAD_ARGS)

chaos: $(STAMP) $(MODEL_STAMP) ## load while Triton and Milvus are killed, hung and restarted (~2 min); fails if an acknowledged item is lost
	$(PY) -m dedup_load.chaos $(CHAOS_ARGS)

lint: $(STAMP) ## ruff and mypy (generated stubs excluded)
	$(VENV)/bin/ruff check server clients/python/dedup_client tests
	$(VENV)/bin/mypy server/dedup_server server/dedup_stack server/dedup_eval server/dedup_load server/dedup_bench server/dedup_bench_scale clients/python/dedup_client

deploy-check: $(STAMP) ## validate deploy/ offline: compose schema, Kubernetes manifests, Dockerfile lint, GPU model configs
	bash deploy/check.sh

# Stubs for Python (.venv's grpcio-tools), TypeScript (ts-proto) and Go (Debian's protoc-gen-go[-grpc]).
proto: $(STAMP) clients-setup ## regenerate the checked-in stubs of every language from proto/
	scripts/proto.sh generate

proto-check: $(STAMP) clients-setup ## fail when the checked-in stubs differ from what proto/ generates
	scripts/proto.sh check

# Go builds against Debian's library sources (clients/go/vendor), never the module proxy.
GO_ENV := GOFLAGS=-mod=vendor GOPROXY=off
clients-setup: ## install the TypeScript and Go toolchains (apt, npm ci; root or sudo for apt)
	scripts/clients-setup.sh

clients-build: clients-setup ## build the TypeScript and Go clients and their examples
	npm run --prefix clients/ts --silent build
	cd clients/go && $(GO_ENV) go vet ./... && $(GO_ENV) go build -o bin/quickstart ./examples/quickstart

clients-examples: $(STAMP) clients-build ## run each client's quickstart against a running server (DEDUP_TARGET)
	$(PY) scripts/grpc_list.py --expect dedup.v1.Deduplication --describe dedup.v1.Deduplication
	$(PY) clients/python/examples/quickstart.py
	node clients/ts/dist/examples/quickstart.js
	clients/go/bin/quickstart

clean: ## remove the venv, built models and local data
	rm -rf $(VENV) .dedup-data triton_models/*/1/model.onnx triton_models/*/config.pbtxt triton_models/*/model_card.json
