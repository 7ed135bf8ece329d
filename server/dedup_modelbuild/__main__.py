"""`python -m dedup_modelbuild --repository triton_models [...]` — what `make model` runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .build import CALIBRATION_METHODS, PRECISIONS, BuildOptions, build
from .errors import ModelBuildError
from .weights import ENV_RESNET50_WEIGHTS

logger = logging.getLogger("dedup_modelbuild")

ENV_VERIFY_IMAGES = "DEDUP_VERIFY_IMAGES"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dedup_modelbuild",
        description="Export the embedding model to ONNX and render the Triton model repository.",
    )
    parser.add_argument("--repository", type=Path, required=True, help="Triton model repository (triton_models)")
    parser.add_argument(
        "--resnet50-weights",
        type=Path,
        help=f"torchvision ResNet-50 checkpoint (.pth); default ${ENV_RESNET50_WEIGHTS}, torch hub cache, download",
    )
    parser.add_argument("--resnet50-sha256", help="require exactly this sha256 for the ResNet-50 file")
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download ResNet-50 weights from download.pytorch.org when none are at hand (10 s timeout)",
    )
    parser.add_argument(
        "--fallback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="without ResNet-50 weights, build the bundled EfficientNet-Lite0 (with a loud warning)",
    )
    parser.add_argument("--force", action="store_true", help="re-export even when the model card matches")
    parser.add_argument(
        "--verify-images",
        type=Path,
        help=f"folder of photos to verify the export with; default ${ENV_VERIFY_IMAGES} or "
        "../shared/eval/imagededup/base_images next to the repository's project",
    )
    parser.add_argument(
        "--intra-op-threads", type=int, default=0, help="ONNX Runtime threads of the CPU model (0 = per core)"
    )
    parser.add_argument(
        "--onnx-gpu-tensorrt",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let embedder_onnx_gpu run through ONNX Runtime's TensorRT provider in FP16",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="int8",
        help="what the CPU model serves: static INT8 (QDQ, per-channel, calibrated on real photos) or the FP32 "
        "export (always kept as embedder/1/model_fp32.onnx)",
    )
    parser.add_argument(
        "--calibration-images",
        type=Path,
        help="folder of real photos to calibrate INT8 with (default: the photos bundled with scikit-image; never "
        "the evaluation corpus)",
    )
    parser.add_argument(
        "--calibration-method", choices=CALIBRATION_METHODS, default="Percentile",
        help="ONNX Runtime calibration method for INT8",
    )
    parser.add_argument("--benchmark", action="store_true", help="measure ONNX Runtime CPU images/s after export")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _default_verify_images(repository: Path) -> Path | None:
    env = os.environ.get(ENV_VERIFY_IMAGES)
    if env:
        return Path(env)
    candidate = repository.resolve().parent.parent / "shared" / "eval" / "imagededup" / "base_images"
    return candidate if candidate.is_dir() else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = BuildOptions(
        repository=args.repository,
        resnet50_weights=args.resnet50_weights,
        resnet50_sha256=args.resnet50_sha256,
        download=args.download,
        fallback=args.fallback,
        force=args.force,
        verify_images=args.verify_images or _default_verify_images(args.repository),
        intra_op_threads=args.intra_op_threads,
        onnx_gpu_tensorrt=args.onnx_gpu_tensorrt,
        benchmark=args.benchmark,
        precision=args.precision,
        calibration_images=args.calibration_images,
        calibration_method=args.calibration_method,
    )
    try:
        build(options)
    except ModelBuildError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
