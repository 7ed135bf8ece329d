"""Quickstart: index a few images with IndexStream, then ask CheckDuplicate about a grey copy of
one of them (a duplicate), an unrelated photo (not one) and bytes that are no image
(INVALID_ARGUMENT). Every call has a deadline; each answer is checked, and the exit status is 1
when one is wrong.

    PYTHONPATH=clients/python python clients/python/examples/quickstart.py [--target HOST:PORT] [IMAGE_OR_DIR ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from dedup_client import DEFAULT_TARGET, DedupClient, DedupError, IndexItem, IndexStatus

EVAL_DIR = Path("../shared/eval/imagededup")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}


class Quickstart:
    def __init__(self, client: DedupClient, collection: str) -> None:
        self.client = client
        self.collection = collection
        self.failures = 0

    def expect(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}")
        self.failures += not ok

    def report_error(self, call: str, error: DedupError) -> None:
        """A failed call, the way to read one: its status code and message."""
        self.expect(False, f"{call} failed: {error.code}: {error.details}")

    def index(self, paths: Sequence[Path], stream_timeout: float) -> None:
        print(f'IndexStream: {len(paths)} images into "{self.collection}"')

        def items() -> Iterator[IndexItem]:  # files are read one at a time, as the stream asks
            for path in paths:
                yield IndexItem(
                    id=path.stem, image=path.read_bytes(), collection=self.collection, metadata={"path": str(path)}
                )

        indexed = 0
        try:
            for result in self.client.index(items(), timeout=stream_timeout):
                if result.status is IndexStatus.INDEXED:
                    indexed += 1
                else:
                    print(f"  {result.id} {result.status.name}: {result.error}")
        except DedupError as error:
            self.report_error("IndexStream", error)
            return
        self.expect(indexed == len(paths), f"{indexed} of {len(paths)} images INDEXED")

    def check_duplicate(self, path: Path, expect_id: str | None) -> None:
        """Expects the best match ``expect_id``, or no duplicate when it is None."""
        try:
            result = self.client.check(path.read_bytes(), collection=self.collection, top_k=3)
        except DedupError as error:
            self.report_error(f"CheckDuplicate {path}", error)
            return
        print(
            f"CheckDuplicate {path.name}: is_duplicate={result.is_duplicate} "
            f"threshold={result.threshold:.3f} model={result.model}"
        )
        for match in result.matches:
            print(f"  match {match.id} similarity={match.similarity:.4f}")
        if expect_id is None:
            self.expect(not result.is_duplicate, f"no duplicate of {path.name}")
            return
        best = result.matches[0].id if result.matches else ""
        self.expect(result.is_duplicate and best == expect_id, f'duplicate of {expect_id} (best match "{best}")')

    def check_not_an_image(self) -> None:
        """What a rejected request looks like: INVALID_ARGUMENT and a reason."""
        try:
            self.client.check(b"this is not an image", collection=self.collection)
        except DedupError as error:
            print(f"CheckDuplicate <not an image>: {error.code}: {error.details}")
            self.expect(error.code == "INVALID_ARGUMENT", "a non-image is INVALID_ARGUMENT")
            return
        self.expect(False, "a non-image is INVALID_ARGUMENT (the call succeeded)")


def list_images(inputs: Sequence[Path]) -> list[Path]:
    """Directories expand (not recursively) into their image files, sorted."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            paths.append(item)
    if not paths:
        raise SystemExit(f"error: no images in {', '.join(map(str, inputs))}")
    return sorted(paths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, default=[EVAL_DIR / "base_images"], metavar="IMAGE_OR_DIR")
    parser.add_argument("--target", default=os.environ.get("DEDUP_TARGET", DEFAULT_TARGET))
    parser.add_argument("--collection", default="quickstart_python")
    parser.add_argument("--duplicate", type=Path, default=EVAL_DIR / "ukbench00120_gray.jpg")
    parser.add_argument("--expect", default="ukbench00120", help="id of the best match expected for --duplicate")
    parser.add_argument("--distinct", type=Path, default=EVAL_DIR / "formats_images" / "baboon.pgm")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each CheckDuplicate call, seconds")
    parser.add_argument("--stream-timeout", type=float, default=300.0, help="deadline of the whole IndexStream")
    args = parser.parse_args(argv)

    paths = list_images(args.images)
    with DedupClient(args.target, timeout=args.timeout) as client:
        quickstart = Quickstart(client, args.collection)
        quickstart.index(paths, args.stream_timeout)
        quickstart.check_duplicate(args.duplicate, args.expect)
        quickstart.check_duplicate(args.distinct, None)
        quickstart.check_not_an_image()
    if quickstart.failures:
        print(f"FAILED: {quickstart.failures} check(s)")
        return 1
    print("OK: every answer was the expected one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
