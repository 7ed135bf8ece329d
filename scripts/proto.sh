#!/usr/bin/env bash
# Generate the checked-in client stubs of every language from proto/ alone.
#
#   scripts/proto.sh generate   write them in place (make proto)
#   scripts/proto.sh check      generate into a temporary tree and fail on any difference (make proto-check)
#
# Generators (pinned; `make clients-setup` installs them):
#   Python      grpcio-tools from .venv (its bundled protoc), with .pyi
#   TypeScript  ts-proto from clients/ts/package-lock.json, on Debian's protoc
#   Go          Debian's protoc-gen-go and protoc-gen-go-grpc, on Debian's protoc
# protoc runs from the repository root with relative paths, so no generated header carries a local path.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t PROTO_FILES < <(find proto -name '*.proto' | LC_ALL=C sort)
PY=.venv/bin/python
TS_PLUGIN=clients/ts/node_modules/.bin/protoc-gen-ts_proto
GO_MODULE=github.com/dedup/dedup/clients/go

# The generated trees, relative to the output root; `check` compares them (in Python's, only the
# generated files: the package __init__.py files are written by hand).
GENERATED=(clients/python/dedup clients/ts/src/gen clients/go/dedupv1)

generate() {
  local root=$1
  mkdir -p "$root/clients/python" "$root/clients/ts/src/gen" "$root/clients/go"
  "$PY" -m grpc_tools.protoc -I proto \
    --python_out="$root/clients/python" --pyi_out="$root/clients/python" --grpc_python_out="$root/clients/python" \
    "${PROTO_FILES[@]}"
  protoc -I proto \
    --plugin=protoc-gen-ts_proto="$TS_PLUGIN" --ts_proto_out="$root/clients/ts/src/gen" \
    --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true \
    "${PROTO_FILES[@]}"
  protoc -I proto \
    --go_out="$root/clients/go" --go_opt=module="$GO_MODULE" \
    --go-grpc_out="$root/clients/go" --go-grpc_opt=module="$GO_MODULE" \
    "${PROTO_FILES[@]}"
}

require_tools() {
  local missing=()
  [ -x "$PY" ] || missing+=("$PY (make setup)")
  [ -x "$TS_PLUGIN" ] || missing+=("$TS_PLUGIN (make clients-setup)")
  for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" > /dev/null || missing+=("$tool (make clients-setup)")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'missing generator: %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

case "${1:-}" in
  generate)
    require_tools
    # Stale files of removed messages or services must not survive a regeneration.
    rm -rf clients/ts/src/gen clients/go/dedupv1
    generate .
    echo "stubs generated for Python, TypeScript and Go"
    ;;
  check)
    require_tools
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    drift=0
    for path in "${GENERATED[@]}"; do
      diff -ru --exclude=__init__.py --exclude=__pycache__ "$path" "$tmp/$path" || drift=1
    done
    if [ "$drift" = 1 ]; then
      echo "generated code drifted from proto/: run make proto and commit the result" >&2
      exit 1
    fi
    echo "generated stubs (Python, TypeScript, Go) match proto/"
    ;;
  *)
    echo "usage: $0 generate|check" >&2
    exit 2
    ;;
esac
