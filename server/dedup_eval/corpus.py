"""The benchmark's real photos: ../shared/eval (UKBench, imagededup's test photos) and photos from Debian packages.

Debian packages are fetched with `apt-get download` at pinned versions (the registry this machine and CI reach),
unpacked into a cache, and every photo is checked against its recorded sha256 prefix, so the benchmark is the same
on every machine. The photos were picked by hand, from contact sheets of every image in the packages: real
photographs only (no drawings, paintings, renders, charts, calibration boards, screenshots, texture close-ups or
cut-outs on a transparent background), none under 96 px on the short side, and of each near-identical pair (stereo
pairs, two exposures or two crops of one scene, the same photo in two places) only one.

Sources: wallpapers (MATE, Lomiri, Plasma), OpenCV's sample data, and, listed in corpus_photos.py, the photos of
the educational suite GCompris (kept inside its Qt resource bundles, read with rcc.py: objects, animals,
monuments, music, under-sea scenes), Kalzium's laboratory equipment, KPhotoAlbum's demo album, Tux Paint's photo
templates, Palapeli's puzzles, the GIMP manual's unfiltered example photos, Scribus's templates, digiKam and
scikit-learn (Debian's python3-sklearn). scikit-image's photos stay out: they are the model's INT8 calibration set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import subprocess
from pathlib import Path

from PIL import Image, ImageOps

from .corpus_photos import MORE_DEBIAN_PHOTOS
from .rcc import RccError, read_rcc

logger = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
SHARED_EVAL_DIR = REPO_DIR.parent / "shared" / "eval" / "imagededup"

# Photos larger than this (longest side, pixels) are stored downscaled: uploads on platforms rarely exceed it,
# and 6000x4000 originals would only make the benchmark slow.
MAX_SIDE = 1280

DEBIAN_PACKAGES: dict[str, str] = {
    "mate-backgrounds": "1.26.0-1",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "opencv-doc": "4.6.0+dfsg-12",
    "gcompris-qt-data": "3.1-2",
    "kalzium-data": "4:22.12.3-1",
    "kphotoalbum": "5.9.1-1",
    "tuxpaint-data": "1:0.9.28-sdl2-1",
    "palapeli-data": "4:22.12.3-1",
    "gimp-help-en": "2.10.34-2",
    "scribus-data": "1.5.8+dfsg-4",
    "digikam-data": "4:7.9.0-1",
    "python3-sklearn": "1.2.1+dfsg-1",
}

# A path "<bundle>.rcc:<path inside it>" names a file inside a Qt resource bundle (GCompris keeps its photos so).
RCC_SEPARATOR = ".rcc:"

# (package, path inside it, sha256 prefix, photo id); the rest are in corpus_photos.py
DEBIAN_PHOTOS: tuple[tuple[str, str, str, str], ...] = (
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Aqua.jpg", "5c30118205982da4", "Aqua"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Blinds.jpg", "f7aac0dcc2e06d04", "Blinds"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Dune.jpg", "8a67c2cb0be8c46b", "Dune"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/FreshFlower.jpg", "972b0a0c4e5e3fa9", "FreshFlower"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Garden.jpg", "d3095ee09d425ef2", "Garden"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/GreenMeadow.jpg", "8fa0de0aa4089f73", "GreenMeadow"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/LadyBird.jpg", "e35a9a4126ef969c", "LadyBird"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/RainDrops.jpg", "3e4ea9671c28c90a", "RainDrops"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Storm.jpg", "77ca53077831d323", "Storm"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/TwoWings.jpg", "665e5abf8a539907", "TwoWings"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/Wood.jpg", "19c78500ac00a622", "Wood"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/nature/YellowFlower.jpg", "254da96256acb7ad", "YellowFlower"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg", "bd86b081f9975e2b",
     "Bridge"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/Dragonfly_by_Bolly.jpg", "af5af17841009732", "Dragonfly"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/Picture_0B_by_freespace.jpg", "c8c0ab18e48d9e04",
     "Picture_0B"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/Picture_1A_by_freespace.jpg", "89e86af38d04daae",
     "Picture_1A"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg", "d2e96e6d4da40dd8", "Wine"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg", "66268e7b48f8854d",
     "aitzgorri"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg", "15372488a192b2be",
     "analogpattern"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/free_by_Peter_Nerlich.jpg", "85a5453c2fed514c", "free"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg", "cc40e313c74e421e",
     "friends"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg", "4c119350ead80201", "life"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg", "414d0072b2f6f2c5",
     "picosdeeuropa"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg", "a5634d1ab5e41a35",
     "seeding"),
    ("lomiri-wallpapers-16.04", "/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg", "474dab6a4b9f94dc",
     "sunset"),
    ("lomiri-wallpapers-20.04", "/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg", "6572410c09f4492c",
     "Kleiber"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/BytheWater/contents/images/1280x1024.jpg",
     "c272434ef39f2abf", "BytheWater"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/ColdRipple/contents/images/1280x1024.jpg",
     "05bef6722fc0ed81", "ColdRipple"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/DarkestHour/contents/images/1280x1024.jpg",
     "8e3703fae3a3c217", "DarkestHour"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/EveningGlow/contents/images/1280x1024.jpg",
     "586682dcb362b9f6", "EveningGlow"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/FallenLeaf/contents/images/1280x1024.jpg",
     "95603a6560c7e8d5", "FallenLeaf"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/Grey/contents/images/1280x1024.jpg",
     "88c31d8944b7e693", "Grey"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/Kite/contents/images/1280x1024.jpg",
     "bdca288ce296a981", "Kite"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/OneStandsOut/contents/images/1280x1024.jpg",
     "cb507baf1dafdcae", "OneStandsOut"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/Path/contents/images/1280x1024.jpg",
     "7477457d7f17b736", "Path"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/summer_1am/contents/images/1280x1024.jpg",
     "c868b50789591dd4", "summer_1am"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/aero1.jpg", "d9a69191f6e3642e", "aero1"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/aloeL.jpg", "cce5736808efe80d", "aloeL"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/apple.jpg", "e86879de3d9a807d", "apple"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/baboon.jpg", "1a1dd18d78eec444", "baboon"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/board.jpg", "4c9a24ba67138ad5", "board"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/building.jpg", "742a1baad62ac82e", "building"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/butterfly.jpg", "34a99716b78ded10", "butterfly"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/ela_original.jpg", "b55798b35e2dcb24", "ela_original"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/fruits.jpg", "9c031d80a1c52da5", "fruits"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/home.jpg", "23b8cf46a1965d0e", "home"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/leuvenA.jpg", "b2977cdbd9fb3f94", "leuvenA"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/licenseplate_motion.jpg", "ea6fa9cea75df91b",
     "licenseplate_motion"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/messi5.jpg", "1d570e49654e84c7", "messi5"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/orange.jpg", "152c20d2f380ac98", "orange"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg", "20bb6e8ae96918a3", "squirrel_cls"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/stuff.jpg", "21cd00afbdd0727f", "stuff"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/chicky_512.png", "4d2cf040de084fd3", "chicky_512"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/graf1.png", "1504b769303c7bde", "graf1"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/rubberwhale1.png", "eb312435369dac9e", "rubberwhale1"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/smarties.png", "ad3f751c053fdcf4", "smarties"),
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/sudoku.png", "000cf81b7ce79501", "sudoku"),
)

# From ../shared/eval/imagededup: the ten UKBench photos and the one other real photo (Iggy). baboon.pgm is the
# same photo as OpenCV's baboon.jpg, and the rest are graphics.
SHARED_PHOTOS: tuple[str, ...] = (
    "base_images/ukbench00120.jpg", "base_images/ukbench01380.jpg", "base_images/ukbench08976.jpg",
    "base_images/ukbench08996.jpg", "base_images/ukbench09012.jpg", "base_images/ukbench09040.jpg",
    "base_images/ukbench09060.jpg", "base_images/ukbench09268.jpg", "base_images/ukbench09348.jpg",
    "base_images/ukbench09380.jpg", "formats_images/Iggy.1024.ppm",
)


class CorpusError(RuntimeError):
    """The benchmark photos could not be fetched or did not match their checksums."""


@dataclasses.dataclass(frozen=True)
class Photo:
    id: str
    source: str  # where it came from: "debian:<package>" or "shared/eval"
    image: Image.Image  # RGB, longest side at most MAX_SIDE


def _fetch_package(package: str, version: str, cache_dir: Path) -> Path:
    """Unpack one pinned Debian package into cache_dir/<package> (downloaded once)."""
    target = cache_dir / package
    done = target / ".unpacked"
    if done.is_file() and done.read_text() == version:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f"{package}_*.deb"):
        stale.unlink()
    logger.info("downloading Debian package %s=%s", package, version)
    try:
        subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=cache_dir, check=True,
                       capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise CorpusError(f"cannot download Debian package {package}={version}: {detail.strip()}") from exc
    debs = list(cache_dir.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise CorpusError(f"expected one .deb for {package} in {cache_dir}, found {len(debs)}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(target)], check=True)
    debs[0].unlink()
    done.write_text(version)
    return target


def _read_photo(root: Path, inner: str, bundles: dict[Path, dict[str, bytes]]) -> bytes | None:
    """The bytes of one photo in an unpacked package (inside a resource bundle for RCC paths); None if missing."""
    if RCC_SEPARATOR not in inner:
        path = root / inner.lstrip("/")
        return path.read_bytes() if path.is_file() else None
    bundle, member = inner.split(RCC_SEPARATOR, 1)
    bundle_path = root / (bundle.lstrip("/") + ".rcc")
    if bundle_path not in bundles:
        if not bundle_path.is_file():
            return None
        try:
            bundles[bundle_path] = read_rcc(bundle_path)
        except RccError as exc:
            raise CorpusError(f"unreadable resource bundle {bundle_path}: {exc}") from exc
    return bundles[bundle_path].get(member)


def _load(source: Path | io.BytesIO) -> Image.Image:
    with Image.open(source) as image:
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))
        rgb = ImageOps.exif_transpose(image).convert("RGB")  # as displayed: ukbench09268 is stored rotated
    rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return rgb


def load_corpus(cache_dir: Path) -> list[Photo]:
    """Every benchmark photo, checked against its checksum, in a fixed order."""
    photos: list[Photo] = []
    for relative in SHARED_PHOTOS:
        path = SHARED_EVAL_DIR / relative
        if not path.is_file():
            raise CorpusError(f"missing {path}: the shared evaluation photos must sit beside the repository")
        photos.append(Photo(id=Path(relative).stem.split(".")[0], source="shared/eval", image=_load(path)))
    roots = {package: _fetch_package(package, version, cache_dir) for package, version in DEBIAN_PACKAGES.items()}
    bundles: dict[Path, dict[str, bytes]] = {}  # each resource bundle read once
    for package, inner, sha_prefix, photo_id in DEBIAN_PHOTOS + MORE_DEBIAN_PHOTOS:
        data = _read_photo(roots[package], inner, bundles)
        if data is None:
            raise CorpusError(f"{package}={DEBIAN_PACKAGES[package]} has no {inner}")
        if not hashlib.sha256(data).hexdigest().startswith(sha_prefix):
            raise CorpusError(f"checksum mismatch for {package}:{inner}")
        photos.append(Photo(id=photo_id, source=f"debian:{package}", image=_load(io.BytesIO(data))))
    ids = [p.id for p in photos]
    if len(set(ids)) != len(ids):
        raise CorpusError("photo ids are not unique")
    return photos
