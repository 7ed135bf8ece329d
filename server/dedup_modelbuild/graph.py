"""The exported graph: uint8 NHWC RGB images in, unit-length embeddings out.

Preprocessing lives in the graph so clients send 1 byte per channel (4x less than float32 over gRPC)
and nobody can normalise differently for indexing and for queries.

The backbone sees the image's luminance (grey, copied to the three channels), not its colours. Measured with the
evaluation harness's photos (make eval): on colour input a greyed copy can fall to cosine 0.46 while two different
flower close-ups reach 0.63, so no threshold separates them; on luminance the greyed copy scores like the others
and every copy outscores every different photo on the calibration split. Colour shifts, brightness and grey
copies are exactly what re-uploads change; structure is what identifies a photo.
"""

from __future__ import annotations

import torch
from torch import nn

from .architectures import Architecture

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# ITU-R BT.601 luma weights, as Pillow's convert("L") and JPEG's Y channel use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class EmbeddingGraph(nn.Module):
    """``images`` uint8 [N, H, W, 3] → ``embeddings`` float32 [N, D] with L2 norm 1."""

    def __init__(self, backbone: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        # (x / 255 - mean) / std folded into one multiply-add per channel; NHWC, so channels are last.
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, 1, 1, 3))
        self.register_buffer("shift", (-mean_t / std_t).view(1, 1, 1, 3))
        self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 1, 1, 3))

    @classmethod
    def for_architecture(cls, backbone: nn.Module, architecture: Architecture) -> EmbeddingGraph:
        return cls(backbone, mean=architecture.mean, std=architecture.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grey = (images.to(torch.float32) * self.luma).sum(dim=3, keepdim=True)
        x = grey * self.scale + self.shift  # broadcasts grey to the three normalised channels
        features = self.backbone(x.permute(0, 3, 1, 2))
        # Divide by the largest magnitude first: the result is the same, but the sum of squares can then
        # not overflow when a GPU engine runs this part in FP16 (2048 squares of large activations can).
        peak = features.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        features = features / peak
        norm = torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min(1e-12)
        return features / norm
