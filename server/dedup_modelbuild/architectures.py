"""What each supported backbone needs besides its weights: embedding size and input normalisation.

Kept free of torch so the renderer and the weights chooser can use it in a bare serving venv.
"""

from dataclasses import dataclass
from typing import Final

INPUT_SIZE: Final = 224
"""Clients resize to this square before sending; the graph does not resize."""


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """A backbone family: its pooled-feature size and the normalisation its weights were trained with.

    ``mean``/``std`` are per RGB channel on the 0..1 scale (torchvision convention); the exported graph
    applies ``(pixel / 255 - mean) / std``.
    """

    name: str
    embedding_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


RESNET50: Final = Architecture(
    name="resnet50",
    embedding_dim=2048,
    # torchvision's ImageNet statistics, used by every torchvision classification checkpoint.
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)

EFFICIENTNET_LITE0: Final = Architecture(
    name="efficientnet_lite0",
    embedding_dim=1280,
    # The .pth is a direct conversion of Google's TF EfficientNet-Lite checkpoint, which was trained with
    # "inception-style" MEAN_RGB=127, STDDEV_RGB=128 on 0..255 (tensorflow/tpu efficientnet_lite_builder),
    # not the ImageNet mean/std that the PyTorch loader's README copies from EfficientNet-B*.
    mean=(127.0 / 255.0,) * 3,
    std=(128.0 / 255.0,) * 3,
)

ARCHITECTURES: Final = {a.name: a for a in (RESNET50, EFFICIENTNET_LITE0)}
