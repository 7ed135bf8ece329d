#!/usr/bin/env bash
# `make deploy-check`: static checks of deploy/ with pinned tools from the dev extra, offline (every
# schema ships inside its package) and without Docker or a cluster. Images are never built here.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${VENV_BIN:-.venv/bin}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Kubernetes versions to validate against: the oldest with gRPC probes GA, and the newest bundled.
k8s_versions=(1.27.0 1.37.0)

echo "== compose files: Compose Specification schema (check-jsonschema's bundled copy)"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml deploy/docker-compose.secure.yml

echo "== front.Dockerfile: hadolint"
"$bin/hadolint" deploy/front.Dockerfile && echo "ok -- hadolint"

echo "== Kubernetes: kustomize render, then the API schemas (strict: unknown fields fail)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir="${dir%/}"
    "$bin/kubectl" kustomize "$dir" > "$tmp/rendered.yaml"
    for version in "${k8s_versions[@]}"; do
        "$bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$tmp/rendered.yaml"
    done
    echo "ok -- $dir: $(grep -c '^kind:' "$tmp/rendered.yaml") objects valid for Kubernetes ${k8s_versions[*]}"
done

echo "== health check script: ruff, mypy"
"$bin/ruff" check deploy
"$bin/mypy" deploy/grpc_health_check.py

echo "== consistency with the code, GPU model configs, health check (pytest)"
"$bin/python" -m pytest -q tests/unit/test_deploy.py tests/unit/test_deploy_healthcheck.py
