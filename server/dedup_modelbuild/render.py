"""Render each model's config.pbtxt from its committed config.pbtxt.in. No torch needed.

The identity parameters depend on the built weights, so config.pbtxt is generated (and git-ignored);
the templates are the reviewed source. CI can render with made-up parameters and parse the result.
"""

from __future__ import annotations

import logging
import os
import string
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .errors import TemplateError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

logger = logging.getLogger(__name__)

TEMPLATE_NAME: Final = "config.pbtxt.in"
CONFIG_NAME: Final = "config.pbtxt"
MODEL_NAMES: Final = ("embedder", "embedder_onnx_gpu", "embedder_trt")
"""Model directories in the repository that carry a template; "embedder" is the CPU model."""

# ONNX Runtime's TensorRT execution provider inside the onnxruntime backend: FP16 engines, cached so
# only the first load after a deploy pays the build (minutes).
_TENSORRT_ACCELERATOR: Final = """optimization {
  execution_accelerators {
    gpu_execution_accelerator : [
      {
        name : "tensorrt"
        parameters { key: "precision_mode" value: "FP16" }
        parameters { key: "max_workspace_size_bytes" value: "2147483648" }
        parameters { key: "trt_engine_cache_enable" value: "1" }
        parameters { key: "trt_engine_cache_path" value: "/tmp/embedder_onnx_gpu_trt_cache" }
      }
    ]
  }
}"""


@dataclass(frozen=True, kw_only=True)
class ModelParameters:
    """What the configs tell clients about the built model (the ``parameters`` block)."""

    model_id: str
    model_version: str
    embedding_dim: int
    weights_sha256: str
    fallback: bool
    fallback_reason: str
    intra_op_threads: int = 0
    """ONNX Runtime intra-op threads for the CPU model; 0 = one per physical core."""
    precision: str = "fp32"
    """What the served file computes in ("int8", "fp32", "fp16"); the model_version differs per precision."""
    input_colour: str = "rgb"
    """What the graph reads of its RGB input: "rgb", or "luma" (grey; the front may then decode to grey)."""

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.input_colour not in ("rgb", "luma"):
            raise ValueError(f"input_colour must be 'rgb' or 'luma', got {self.input_colour!r}")
        if not self.model_id or not self.model_version:
            raise ValueError("model_id and model_version must not be empty")


def _pbtxt_string(value: str) -> str:
    """Escape for the inside of a double-quoted protobuf text-format string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def render_text(template: str, parameters: ModelParameters, *, onnx_gpu_tensorrt: bool = False) -> str:
    values = {
        "model_id": _pbtxt_string(parameters.model_id),
        "model_version": _pbtxt_string(parameters.model_version),
        "embedding_dim": str(parameters.embedding_dim),
        "weights_sha256": _pbtxt_string(parameters.weights_sha256),
        "fallback": "true" if parameters.fallback else "false",
        "fallback_reason": _pbtxt_string(parameters.fallback_reason),
        "intra_op_threads": str(parameters.intra_op_threads),
        "precision": _pbtxt_string(parameters.precision),
        "input_colour": parameters.input_colour,
        "onnx_gpu_optimization": _TENSORRT_ACCELERATOR if onnx_gpu_tensorrt else "",
    }
    try:
        return string.Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise TemplateError(f"bad placeholder in template: {exc}") from exc


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """Parse config text into Triton's ModelConfig message (needs tritonclient[grpc]); raises on error."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # mkstemp creates 0600; Triton may run as another user (container) and must read the file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def render_repository(
    repository: Path,
    parameters: ModelParameters | Mapping[str, ModelParameters],
    *,
    onnx_gpu_tensorrt: bool = False,
    models: tuple[str, ...] = MODEL_NAMES,
) -> list[Path]:
    """Write ``<repository>/<model>/config.pbtxt`` for every model; return the written paths.

    ``parameters`` is one set for every model, or one per model name (the models serve different precisions).

    Unchanged files are not rewritten, so Triton's model-control polling does not see spurious edits.
    """
    written = []
    for name in models:
        template_path = repository / name / TEMPLATE_NAME
        if not template_path.is_file():
            raise TemplateError(f"missing template {template_path}")
        model_parameters = parameters if isinstance(parameters, ModelParameters) else parameters[name]
        text = render_text(
            template_path.read_text(encoding="utf-8"), model_parameters, onnx_gpu_tensorrt=onnx_gpu_tensorrt
        )
        config_path = template_path.with_name(CONFIG_NAME)
        if not config_path.is_file() or config_path.read_text(encoding="utf-8") != text:
            _write_atomic(config_path, text)
            logger.info("rendered %s", config_path)
        written.append(config_path)
    return written
