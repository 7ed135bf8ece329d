"""ONNX Runtime CPU throughput of the exported model (opt-in: `--benchmark`)."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from .architectures import INPUT_SIZE
from .graph import INPUT_NAME, OUTPUT_NAME
from .verify import cpu_session

logger = logging.getLogger(__name__)


def measure_throughput(
    onnx_path: Path, *, batch_sizes: tuple[int, ...] = (1, 32), threads: int = 0, min_seconds: float = 3.0
) -> dict[str, float]:
    """Images per second (median over runs after one warm-up) per batch size, keyed "b<size>"."""
    session = cpu_session(onnx_path, threads=threads)
    rng = np.random.default_rng(0)
    results = {}
    for size in batch_sizes:
        images = rng.integers(0, 256, size=(size, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        session.run([OUTPUT_NAME], {INPUT_NAME: images})
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - started < min_seconds:
            begin = time.perf_counter()
            session.run([OUTPUT_NAME], {INPUT_NAME: images})
            times.append(time.perf_counter() - begin)
        results[f"b{size}"] = round(size / statistics.median(times), 1)
        logger.info("benchmark: batch %d: %.1f images/s (%d runs)", size, results[f"b{size}"], len(times))
    return results
