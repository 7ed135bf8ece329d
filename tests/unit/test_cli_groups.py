"""``dedup groups`` (text, JSON, CSV, the gallery file) and ``dedup check`` of several files, against a real
in-process gRPC server with a fake servicer."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client.cli import main
from PIL import Image


def _member(image_id: str, similarity: float, *, keeper: bool = False, mirrored: bool = False,
            size: tuple[int, int] = (640, 480), fmt: str = "JPEG", nbytes: int = 200_000,
            file: str = "") -> dedup_pb2.GroupMember:
    return dedup_pb2.GroupMember(
        id=image_id, similarity=similarity, closest="a.jpg" if image_id != "a.jpg" else "b.jpg", keeper=keeper,
        mirrored=mirrored, metadata={"path": image_id, **({"file": file} if file else {})}, width=size[0],
        height=size[1], bytes=nbytes, format=fmt, indexed_at_ms=1_764_000_000_000,
    )


class FakeGroups(dedup_pb2_grpc.DeduplicationServicer):
    def __init__(self) -> None:
        self.requests: list[dedup_pb2.FindDuplicateGroupsRequest] = []
        self.files: dict[str, str] = {}
        self.checks = 0

    def FindDuplicateGroups(
        self, request: dedup_pb2.FindDuplicateGroupsRequest, context: grpc.ServicerContext
    ) -> Iterator[dedup_pb2.FindDuplicateGroupsResponse]:
        self.requests.append(request)
        yield dedup_pb2.FindDuplicateGroupsResponse(progress=dedup_pb2.ScanProgress(scanned=5, total=5))
        members = [
            _member("a.jpg", 0.99, keeper=True, file=self.files.get("a.jpg", "")),
            _member("b.jpg", 0.99, file=self.files.get("b.jpg", "")),
            _member("c, \"quoted\".jpg", 0.91, mirrored=True, size=(320, 240), nbytes=50_000),
        ]
        yield dedup_pb2.FindDuplicateGroupsResponse(group=dedup_pb2.DuplicateGroup(
            ids=sorted(m.id for m in members), members=members, keeper="a.jpg",
            pairs=[dedup_pb2.DuplicatePair(id_a="a.jpg", id_b="b.jpg", similarity=0.99)],
        ))
        yield dedup_pb2.FindDuplicateGroupsResponse(group=dedup_pb2.DuplicateGroup(
            ids=["x.png", "y.png"], keeper="x.png",
            members=[_member("x.png", 0.8, keeper=True, fmt="PNG"), _member("y.png", 0.8, fmt="PNG")],
        ))

    def GetStats(
        self, request: dedup_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.GetStatsResponse:
        return dedup_pb2.GetStatsResponse(default_threshold=0.63)

    def CheckDuplicate(
        self, request: dedup_pb2.CheckDuplicateRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.CheckDuplicateResponse:
        self.checks += 1
        if request.image.startswith(b"BAD"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image")
        if request.collection == "nope":
            context.abort(grpc.StatusCode.NOT_FOUND, "collection 'nope' does not exist")
        matches = ([dedup_pb2.Match(id="a.jpg", similarity=0.97, mirrored=request.image.startswith(b"DUPM")),
                    dedup_pb2.Match(id="b.jpg", similarity=0.95)] if request.image.startswith(b"DUP") else [])
        return dedup_pb2.CheckDuplicateResponse(is_duplicate=bool(matches), matches=matches, model="fake",
                                                threshold=0.63)


@pytest.fixture
def served() -> Iterator[tuple[FakeGroups, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = FakeGroups()
    dedup_pb2_grpc.add_DeduplicationServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def test_groups_text_prints_each_group_once_with_its_keeper(
    served: tuple[FakeGroups, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, target = served
    assert main(["--target", target, "groups", "--keep", "original-format", "--min-size", "2", "--limit", "9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "group 1: 3 images, keep a.jpg"
    assert out[1].split() == ["keep", "a.jpg", "0.9900", "640x480", "JPEG", "195.3", "KB"]
    assert out[2].split() == ["b.jpg", "0.9900", "640x480", "JPEG", "195.3", "KB"]
    assert out[3].split()[-1] == "mirrored" and "0.9100" in out[3]
    assert out[4] == "group 2: 2 images, keep x.png"
    assert out[-1] == "2 groups; 3 images could go (439.5 KB), keeping one per group (original-format)"
    assert len(out) == 8  # one line per member, no pair lines
    request = fake.requests[-1]
    assert (request.keep, request.min_group_size, request.limit) == (dedup_pb2.KEEP_POLICY_ORIGINAL_FORMAT, 2, 9)


def test_groups_json_and_csv_say_the_same(served: tuple[FakeGroups, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, target = served
    assert main(["--target", target, "--json", "groups"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert [(g["group"], g["size"], g["keeper"]) for g in groups] == [(1, 3, "a.jpg"), (2, 2, "x.png")]
    first = groups[0]["members"]
    assert [m["id"] for m in first] == ["a.jpg", "b.jpg", 'c, "quoted".jpg'] and first[0]["keeper"]
    assert first[2] | {"metadata": None} == {
        "id": 'c, "quoted".jpg', "path": 'c, "quoted".jpg', "similarity": 0.91, "closest": "a.jpg",
        "keeper": False, "mirrored": True, "width": 320, "height": 240, "bytes": 50_000, "format": "JPEG",
        "indexed_at": "2025-11-24T16:00:00Z", "metadata": None,
    }
    assert main(["--target", target, "groups", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 5
    assert [(r["group"], r["id"], r["keep"], r["mirrored"]) for r in rows[:3]] == [
        ("1", "a.jpg", "1", "0"), ("1", "b.jpg", "0", "0"), ("1", 'c, "quoted".jpg', "0", "1"),
    ]
    assert rows[2]["similarity"] == "0.9100" and rows[2]["width"] == "320" and rows[3]["format"] == "PNG"
    with pytest.raises(SystemExit):
        main(["--target", target, "--json", "groups", "--csv"])


def test_groups_html_writes_one_self_contained_page(
    served: tuple[FakeGroups, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, target = served
    photo = tmp_path / "a.jpg"
    Image.new("RGB", (640, 480), (200, 40, 40)).save(photo)
    fake.files = {"a.jpg": str(photo), "b.jpg": str(tmp_path / "missing.jpg")}
    report = tmp_path / "out" / "report.html"
    assert main(["--target", target, "groups", "--html", str(report)]) == 0
    out = capsys.readouterr().out
    assert f"gallery: {report} (2 groups, 5 images, 1 thumbnails)" in out
    assert out.strip().endswith("keeping one per group (largest)")
    page = report.read_text()
    assert page.count("data:image/jpeg;base64,") == 1  # a.jpg's thumbnail; the others show ids
    assert "http://" not in page and "https://" not in page and "src=\"http" not in page
    assert "default-src 'none'" in page
    assert '"threshold":0.63' in page  # the server's default, asked for when none was given


def test_check_several_files_and_a_folder_one_line_each(
    served: tuple[FakeGroups, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, target = served
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    (folder / "dup.jpg").write_bytes(b"DUP1")
    (folder / "sub" / "mirror.png").write_bytes(b"DUPM")
    (folder / "new.gif").write_bytes(b"new")
    (folder / "bad.jpg").write_bytes(b"BAD")
    (folder / "notes.txt").write_bytes(b"not listed")
    single = tmp_path / "one.jpg"
    single.write_bytes(b"DUP2")
    code = main(["--target", target, "check", str(single), str(folder), str(tmp_path / "missing.jpg")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # two files could not be checked
    assert lines == [
        f"{single.as_posix()}: duplicate of a.jpg (0.9700) (+1 more)",
        f"{folder.as_posix()}/bad.jpg: error: INVALID_ARGUMENT: not a recognised image",
        f"{folder.as_posix()}/dup.jpg: duplicate of a.jpg (0.9700) (+1 more)",
        f"{folder.as_posix()}/new.gif: unique",
        f"{folder.as_posix()}/sub/mirror.png: duplicate of a.jpg (0.9700, mirrored) (+1 more)",
        f"{(tmp_path / 'missing.jpg').as_posix()}: error: cannot read file: No such file or directory",
    ]
    assert main(["--target", target, "--json", "check", str(folder), "--no-recursive"]) == 1
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(o["file"]).name for o in objects] == ["bad.jpg", "dup.jpg", "new.gif"]
    assert objects[0]["error"].startswith("INVALID_ARGUMENT") and objects[1]["is_duplicate"] is True
    assert objects[1]["matches"][0]["id"] == "a.jpg" and objects[2]["matches"] == []
    # One file: the detailed answer, as before.
    assert main(["--target", target, "check", str(single)]) == 0
    assert "duplicate: yes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--target", target, "check", str(single), str(single), "--insert", "--id", "x"])


def test_check_of_a_folder_stops_at_an_error_that_is_not_one_files(
    served: tuple[FakeGroups, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, target = served
    for n in range(200):
        (tmp_path / f"{n:03d}.jpg").write_bytes(b"DUP")
    assert main(["--target", target, "--collection", "nope", "check", str(tmp_path)]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert fake.checks < 20  # not 200 failing calls: the checks still queued were cancelled
