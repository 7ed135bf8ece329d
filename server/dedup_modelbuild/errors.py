"""Errors raised while building the embedding model.

    ModelBuildError
     ├── WeightsUnavailable      no usable weights from this source (missing file, no network)
     ├── ChecksumMismatch        a weights file is not the file it claims to be: refused
     ├── ExportVerificationError the exported graph disagrees with torch or gives meaningless features
     └── TemplateError           a config template is missing or has an unknown placeholder
"""


class ModelBuildError(Exception):
    """Base class: the build cannot go on."""


class WeightsUnavailable(ModelBuildError):
    """This weights source cannot provide weights; the caller may try the next source."""


class ChecksumMismatch(ModelBuildError):
    """The file's sha256 does not match what its name or the known-weights table promises."""


class ExportVerificationError(ModelBuildError):
    """The ONNX export does not match torch, or its embeddings fail the sanity checks."""


class TemplateError(ModelBuildError):
    """A config.pbtxt.in template is missing or refers to a value the renderer does not know."""
