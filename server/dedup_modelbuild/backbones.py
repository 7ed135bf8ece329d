"""Load a verified weights file into a torch module that returns pooled features [N, D] from NCHW input."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .architectures import EFFICIENTNET_LITE0, RESNET50, Architecture
from .resnet import ResNet50

logger = logging.getLogger(__name__)


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite up to the global average pool; the classifier (dropout + fc) is dropped."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.extract_features(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    # weights_only: a .pth is a pickle; never run arbitrary code from a downloaded file.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def build_resnet50(path: Path) -> nn.Module:
    model = ResNet50()
    model.load_state_dict(_state_dict(path), strict=True)
    return model.eval()


def build_efficientnet_lite0(path: Path) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + our own strict load rather than from_pretrained, which loads without map_location and
    # only asserts on missing keys.
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(_state_dict(path), strict=True)
    return EfficientNetLiteFeatures(net).eval()


def load_backbone(architecture: Architecture, path: Path) -> nn.Module:
    """The pretrained feature extractor for ``architecture`` with the weights at ``path`` (already verified)."""
    logger.info("loading %s weights from %s", architecture.name, path)
    if architecture is RESNET50:
        return build_resnet50(path)
    if architecture is EFFICIENTNET_LITE0:
        return build_efficientnet_lite0(path)
    raise ValueError(f"no loader for architecture {architecture.name!r}")
