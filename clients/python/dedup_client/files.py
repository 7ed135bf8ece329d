"""Finding image files under a folder and turning them, lazily, into IndexItems.

Listing keeps only paths (the progress bar needs the total up front); the bytes of a
file are read only when the gRPC stream pulls its item, so memory stays flat however
large the folder.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .results import IndexItem

DEFAULT_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm"}
)
# Metadata keys `dedup index` stores with each image: the path relative to the indexed folder, and the absolute one.
PATH_KEY, FILE_KEY = "path", "file"


class IdMode(enum.Enum):
    RELATIVE = "relative"  # path relative to the root, '/' separators: unique by construction
    NAME = "name"  # file name only: short, but files of the same name in two folders collide


@dataclass(frozen=True)
class ImageFile:
    path: Path
    relative: str  # relative to the listed root, always with '/' separators


@dataclass(frozen=True)
class Listing:
    files: tuple[ImageFile, ...]
    errors: tuple[str, ...]  # folders that could not be read, as "path: reason"


def normalise_extensions(values: Iterable[str]) -> frozenset[str]:
    """Accept "png", ".PNG" and "png,webp" alike."""
    out: set[str] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip().lower().lstrip(".")
            if part:
                out.add(part)
    return frozenset(out)


def _is_candidate(entry: os.DirEntry[str], extensions: frozenset[str]) -> bool:
    suffix = entry.name.rsplit(".", 1)[-1].lower() if "." in entry.name else ""
    if suffix not in extensions:
        return False
    # Regular files and symlinks (even broken ones, so they are reported as failures);
    # never FIFOs or devices, whose read could block the whole run.
    return entry.is_file() or entry.is_symlink()


def find_images(
    root: Path, *, recursive: bool = True, extensions: frozenset[str] = DEFAULT_EXTENSIONS
) -> Listing:
    """Every file under ``root`` whose extension is in ``extensions``, sorted by relative path.

    Symlinked folders are not followed, so a link loop cannot make the walk endless.
    """
    files: list[ImageFile] = []
    errors: list[str] = []
    pending: list[Path] = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if recursive:
                            pending.append(Path(entry.path))
                    elif _is_candidate(entry, extensions):
                        path = Path(entry.path)
                        files.append(ImageFile(path, path.relative_to(root).as_posix()))
        except OSError as exc:
            errors.append(f"{folder}: {exc.strerror or exc}")
    files.sort(key=lambda f: f.relative)
    return Listing(files=tuple(files), errors=tuple(errors))


def image_id(image: ImageFile, mode: IdMode) -> str:
    return image.relative if mode is IdMode.RELATIVE else image.path.name


def colliding_ids(files: Iterable[ImageFile], mode: IdMode) -> dict[str, list[str]]:
    """Ids shared by more than one file (re-sending an id replaces the image)."""
    seen: dict[str, list[str]] = {}
    for image in files:
        seen.setdefault(image_id(image, mode), []).append(image.relative)
    return {key: paths for key, paths in seen.items() if len(paths) > 1}


def iter_index_items(
    files: Iterable[ImageFile],
    *,
    id_mode: IdMode,
    on_read_error: Callable[[ImageFile, OSError], None],
    collection: str = "",
    skip_duplicates: bool = False,
    threshold: float = 0.0,
) -> Iterator[IndexItem]:
    """One IndexItem per readable file, each read only when pulled.

    Its metadata names the file: ``path`` relative to the listed folder, ``file`` absolute (what the
    gallery makes thumbnails from, and ``dedup dedupe`` moves). An unreadable file is handed to
    ``on_read_error`` (which runs on whatever thread pulls the items, gRPC's own for a stream) and
    skipped, so one bad file never stops the run.
    """
    for image in files:
        try:
            data = image.path.read_bytes()
        except OSError as exc:
            on_read_error(image, exc)
            continue
        yield IndexItem(
            id=image_id(image, id_mode),
            image=data,
            metadata={PATH_KEY: image.relative, FILE_KEY: str(image.path.absolute())},
            collection=collection,
            skip_duplicates=skip_duplicates,
            threshold=threshold,
        )
