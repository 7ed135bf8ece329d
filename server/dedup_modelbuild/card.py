"""model_card.json: what was built, from which weights, with which checksums, and how it verified.

The card is also the build's memo: when it still matches the chosen weights and the model.onnx on
disk, `make model` skips the export.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import RECIPE_VERSION

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """Numbers from checking the exported ONNX against torch and against common sense."""

    images: int
    """Real photos compared between torch and ONNX Runtime."""
    min_cosine_torch_vs_onnx: float
    max_abs_diff_torch_vs_onnx: float
    max_norm_error: float
    """max | ||embedding|| - 1 | over every ONNX output."""
    min_cosine_batch_vs_single: float
    """Same image run alone and inside a batch."""
    min_cosine_near_duplicate: float
    """Lowest cosine between a photo and its horizontal flip or its 50 % downscale."""
    max_cosine_different: float
    """Highest cosine between two different photos."""
    median_cosine_different: float


@dataclass(frozen=True, kw_only=True)
class WeightsInfo:
    path: str
    sha256: str
    source: str
    verification: str


@dataclass(frozen=True, kw_only=True)
class OnnxInfo:
    file: str
    sha256: str
    bytes: int
    opset: int
    input: str
    output: str


@dataclass(frozen=True, kw_only=True)
class QuantizationReport:
    """How the INT8 model was made and how far its embeddings are from FP32 on photos it was not calibrated on."""

    method: str
    """ONNX Runtime calibration method (Percentile, MinMax, ...); QDQ, per-channel INT8 weights, UINT8 activations."""
    calibration_inputs: int
    calibration_source: str
    compared_images: int
    compared_source: str
    median_cosine_int8_vs_fp32: float
    min_cosine_int8_vs_fp32: float
    fp32_nodes: int
    """Nodes kept in FP32 on purpose: the input normalisation and the first convolutions (head), pooling and L2
    normalisation (tail)."""
    seconds: float
    recipe: int = 1
    """build.QUANTIZATION_RECIPE it was made with: a newer recipe re-quantises."""


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    model_id: str
    model_version: str
    architecture: str
    embedding_dim: int
    fallback: bool
    fallback_reason: str
    weights: WeightsInfo
    onnx: OnnxInfo
    preprocessing: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    verification: VerificationReport
    built_at: str
    export_seconds: float
    versions: dict[str, str]
    recipe_version: int = RECIPE_VERSION
    throughput_images_per_s: dict[str, float] = field(default_factory=dict)
    """Optional ONNX Runtime CPU benchmark of the served file, keyed by batch size ("b1", "b32")."""
    precision: str = "fp32"
    """Of the served file ``onnx``: "int8" (static QDQ, the CPU default) or "fp32"."""
    fp32_onnx: OnnxInfo | None = None
    """The FP32 export the served file was made from (GPU models and comparisons use it); None on old cards."""
    quantization: QuantizationReport | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        fields = dict(data)
        fields["weights"] = WeightsInfo(**fields["weights"])
        fields["onnx"] = OnnxInfo(**fields["onnx"])
        if fields.get("fp32_onnx") is not None:
            fields["fp32_onnx"] = OnnxInfo(**fields["fp32_onnx"])
        if fields.get("quantization") is not None:
            fields["quantization"] = QuantizationReport(**fields["quantization"])
        fields["verification"] = VerificationReport(**fields["verification"])
        fields["mean"] = tuple(fields["mean"])
        fields["std"] = tuple(fields["std"])
        return cls(**fields)


def read_card(path: Path) -> ModelCard | None:
    """The card at ``path``, or None when it is missing or unreadable (then the model is rebuilt)."""
    try:
        return ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable model card %s: %s", path, exc)
        return None


def write_card(path: Path, card: ModelCard) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(card.to_json())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; readers may be other users
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
