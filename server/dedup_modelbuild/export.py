"""Export an EmbeddingGraph to one self-contained ONNX file, written atomically."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Final

import onnx
import onnxruntime as ort
import torch

from .architectures import INPUT_SIZE
from .errors import ExportVerificationError
from .graph import INPUT_NAME, OUTPUT_NAME, EmbeddingGraph

logger = logging.getLogger(__name__)

OPSET: Final = 17


def export_onnx(
    graph: EmbeddingGraph, path: Path, *, metadata: dict[str, str] | None = None, opset: int = OPSET
) -> None:
    """Write ``graph`` to ``path`` as ONNX with a dynamic batch axis; tmp file + rename, no external data.

    ``metadata`` goes into the model's metadata_props so the file says what it is on its own.
    """
    graph = graph.eval()
    example = torch.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter (dynamo=False) is deprecated and says so; it is still the one that
            # writes a single file (dynamo=True adds .onnx.data, which Triton would need alongside).
            warnings.simplefilter("ignore", DeprecationWarning)
            # TF-style "same" padding (EfficientNet-Lite) exports as Slice(step=-1) chains torch cannot fold;
            # _fold_constants below folds them, so the warning is noise.
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        model = _fold_constants(tmp)
        for key, value in sorted((metadata or {}).items()):
            model.metadata_props.add(key=key, value=value)
        model.doc_string = "uint8 NHWC RGB 224x224 images -> L2-normalised float32 embeddings"
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
        _check_signature(onnx.load(str(tmp), load_external_data=False))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; Triton may run as another user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)


def _fold_constants(path: Path) -> onnx.ModelProto:
    """Fold constant subgraphs with ONNX Runtime's *basic* level, whose rewrites are plain ONNX ops valid
    for every execution provider (TensorRT included); the extended levels would add ORT-only ops."""
    folded = path.with_name(f"{path.stem}.folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
    finally:
        folded.unlink(missing_ok=True)
    # ORT declares all its own domains; keep only those a node uses so other runtimes see a plain model.
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _check_signature(model: onnx.ModelProto) -> None:
    """Fail early if the exporter named or typed the interface differently than Triton's config says."""
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    in_type, out_type = graph_input.type.tensor_type, graph_output.type.tensor_type
    in_dims = [d.dim_param or d.dim_value for d in in_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out_type.shape.dim]
    problems = []
    if graph_input.name != INPUT_NAME or in_type.elem_type != onnx.TensorProto.UINT8:
        problems.append(f"input is {graph_input.name!r} of type {in_type.elem_type}")
    if in_dims[1:] != [INPUT_SIZE, INPUT_SIZE, 3] or not isinstance(in_dims[0], str):
        problems.append(f"input dims are {in_dims}, expected [batch, {INPUT_SIZE}, {INPUT_SIZE}, 3]")
    if graph_output.name != OUTPUT_NAME or out_type.elem_type != onnx.TensorProto.FLOAT:
        problems.append(f"output is {graph_output.name!r} of type {out_type.elem_type}")
    if len(out_dims) != 2 or not isinstance(out_dims[0], str) or not isinstance(out_dims[1], int):
        problems.append(f"output dims are {out_dims}, expected [batch, D]")
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            problems.append(f"initializer {tensor.name} is stored outside the file")
            break
    if problems:
        raise ExportVerificationError("exported ONNX has the wrong interface: " + "; ".join(problems))
