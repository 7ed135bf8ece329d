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

.PHONY: help setup model run test test-unit test-integration lint proto proto-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,model,dev,eval]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (pinned)

model: $(STAMP) ## build the Triton model repository from real weights (ResNet-50, else EfficientNet-Lite0)
	$(PY) -m dedup_modelbuild --repository triton_models $(if $(RESNET50_WEIGHTS),--resnet50-weights $(RESNET50_WEIGHTS))

$(MODEL_STAMP): | $(STAMP)
	$(MAKE) model

run: $(STAMP) $(MODEL_STAMP) ## install, then run Triton + Milvus + the gRPC front in the foreground (Ctrl-C stops all)
	$(PY) -m dedup_stack

test: $(STAMP) $(MODEL_STAMP) ## install, then run every test (unit + integration against real Triton and Milvus)
	$(PY) -m pytest tests -q

test-unit: $(STAMP) ## unit tests only (no backends)
	$(PY) -m pytest tests/unit -q

test-integration: $(STAMP) $(MODEL_STAMP) ## integration tests only
	$(PY) -m pytest tests/integration -q

lint: $(STAMP) ## ruff and mypy (generated stubs excluded)
	$(VENV)/bin/ruff check server clients/python/dedup_client tests
	$(VENV)/bin/mypy server/dedup_server server/dedup_stack clients/python/dedup_client

PROTO_OUT := clients/python
proto: $(STAMP) ## regenerate the checked-in stubs from proto/
	$(PY) -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) proto/dedup/v1/dedup.proto

proto-check: $(STAMP) ## fail when the checked-in stubs differ from what proto/ generates
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I proto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp proto/dedup/v1/dedup.proto && \
	for f in dedup_pb2.py dedup_pb2.pyi dedup_pb2_grpc.py; do \
	  diff -u $(PROTO_OUT)/dedup/v1/$$f $$tmp/dedup/v1/$$f || { echo "generated code drifted: run make proto"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated stubs match proto/"

clean: ## remove the venv, built models and local data
	rm -rf $(VENV) .dedup-data triton_models/*/1/model.onnx triton_models/*/config.pbtxt triton_models/*/model_card.json
