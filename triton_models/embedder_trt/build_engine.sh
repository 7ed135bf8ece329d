#!/usr/bin/env bash
# Build embedder_trt/1/model.plan (TensorRT, FP16) from the FP32 ONNX that `make model` exported.
#
# Run it on the GPU host, inside NVIDIA's TensorRT container of the SAME release (YY.MM) as the Triton
# container that will serve it: an engine only loads with the TensorRT version and GPU model that built it.
#   docker run --rm --gpus all -v "$PWD/triton_models:/models" nvcr.io/nvidia/tensorrt:24.10-py3 \
#       bash /models/embedder_trt/build_engine.sh
# Overrides: ONNX, PLAN, TRTEXEC, OPT_BATCH (default 32), WORKSPACE_MIB (default 4096).
# The profile's max batch (64) must equal max_batch_size in config.pbtxt.in.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The FP32 export (embedder/1/model.onnx is the CPU model's INT8 QDQ file: TensorRT would build INT8 from it).
onnx="${ONNX:-$here/../embedder/1/model_fp32.onnx}"
plan="${PLAN:-$here/1/model.plan}"
trtexec="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
opt_batch="${OPT_BATCH:-32}"
max_batch=64
shape="224x224x3"

if [[ ! -f "$onnx" ]]; then
    echo "error: $onnx not found: run \`make model\` (python -m dedup_modelbuild) first" >&2
    exit 1
fi
if [[ ! -x "$trtexec" ]]; then
    echo "error: trtexec not found (set TRTEXEC=...); run this inside nvcr.io/nvidia/tensorrt" >&2
    exit 1
fi

mkdir -p "$(dirname "$plan")"
tmp="$plan.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# FP16 everywhere TensorRT finds it faster; the graph divides by the largest feature before the L2 norm,
# so the sum of squares cannot overflow in FP16. Input stays UINT8 NHWC, output FP32, as in the config.
"$trtexec" \
    --onnx="$onnx" \
    --saveEngine="$tmp" \
    --fp16 \
    --minShapes="images:1x$shape" \
    --optShapes="images:${opt_batch}x$shape" \
    --maxShapes="images:${max_batch}x$shape" \
    --memPoolSize="workspace:${WORKSPACE_MIB:-4096}"
mv -f "$tmp" "$plan"
echo "wrote $plan" >&2
