"""Who the embedding model is: its name, version, dimension and what it reads of its input.

Storage pins every collection to one model (index.py) and the model server reports it (embedder.py); both
import it from here, so the index knows no model server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    name: str
    version: str
    embedding_dim: int
    input_size: int
    fallback: bool
    warning: str
    precision: str = "fp32"
    """What the served model computes in ("int8" on CPU, "fp16"/"fp32" on GPU); its version differs per precision."""
    input_colour: str = "rgb"
    """What the model reads of its RGB input: "luma" (grey only: JPEGs may be decoded straight to grey) or "rgb"."""

    @property
    def reads_luma(self) -> bool:
        return self.input_colour == "luma"

    @property
    def label(self) -> str:
        """What collections record and responses report: name@version."""
        return f"{self.name}@{self.version}"


def input_colour(parameters: Mapping[str, str]) -> str:
    """A model config's input_colour: "luma" only when it says so; anything else decodes colour, always safe."""
    return "luma" if parameters.get("input_colour") == "luma" else "rgb"
