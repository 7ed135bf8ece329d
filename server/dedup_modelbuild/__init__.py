"""Build-time tooling that turns pretrained CNN weights into the Triton embedding model.

``python -m dedup_modelbuild --repository triton_models`` chooses the weights (ResNet-50 ImageNet in
production, the bundled EfficientNet-Lite0 as a loud offline fallback), exports one ONNX graph that
takes uint8 NHWC images and returns unit-length embeddings, verifies it, and renders the Triton model
repository. This is the only package that may import torch, and only lazily in the modules that
export; the serving path never imports anything from here.
"""

# Bump when the exported graph changes for the same weights (preprocessing, normalisation, opset):
# the model card records it, so an unchanged card no longer matches and `make model` re-exports.
RECIPE_VERSION = 2  # 2: the backbone sees luminance, not colour
# What recipe 2's graph reads of its RGB input, told to the front (config parameter input_colour): with "luma" the
# front may decode JPEGs straight to grey, which the graph sees as it would see the colour image.
INPUT_COLOUR = "luma"

__all__ = ["INPUT_COLOUR", "RECIPE_VERSION"]
