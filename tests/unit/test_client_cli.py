"""DedupClient and the ``dedup`` CLI against a real in-process gRPC server with a fake servicer.

The fake decides by the image's first bytes: b"DUP" is a duplicate of "existing", b"BAD"
is INVALID, b"FAIL" is FAILED, b"ABORT" aborts the whole stream; anything else is indexed.
It answers IndexStream in reversed groups of three, so the client must not rely on order.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client import (
    DedupClient,
    DedupConnectionError,
    DedupError,
    IndexItem,
    IndexStatus,
)
from dedup_client.cli import main
from dedup_client.files import IdMode, find_images, iter_index_items

EXISTING = dedup_pb2.Match(id="existing", similarity=0.9731, metadata={"path": "old.png"})
INDEX_INFO = dedup_pb2.IndexInfo(
    index_type="HNSW", build_params={"M": "16"}, search_params={"ef": "64"}, metric="COSINE"
)


class FakeDedup(dedup_pb2_grpc.DeduplicationServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stored: dict[str, dict[str, str]] = {"existing": {"path": "old.png"}}
        self.received_metadata: list[dict[str, str]] = []
        self.fallback = False

    def _record(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.received_metadata.append(dict(context.invocation_metadata()))

    def CheckDuplicate(
        self, request: dedup_pb2.CheckDuplicateRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.CheckDuplicateResponse:
        self._record(context)
        if not request.image:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is empty")
        if request.insert_if_unique and not request.id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id is required with insert_if_unique")
        duplicate = request.image.startswith(b"DUP")
        inserted = request.insert_if_unique and not duplicate
        if inserted:
            with self._lock:
                self.stored[request.id] = dict(request.metadata)
        return dedup_pb2.CheckDuplicateResponse(
            is_duplicate=duplicate,
            matches=[EXISTING] if duplicate else [],
            inserted=inserted,
            model="fake-model",
            threshold=request.threshold or 0.92,
        )

    def _index_one(
        self, request: dedup_pb2.IndexRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.IndexResponse:
        image = request.image
        if image.startswith(b"ABORT"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream refused")
        if image.startswith(b"DUP"):
            return dedup_pb2.IndexResponse(
                id=request.id, status=dedup_pb2.IndexResponse.DUPLICATE, matches=[EXISTING]
            )
        if image.startswith(b"BAD"):
            return dedup_pb2.IndexResponse(
                id=request.id, status=dedup_pb2.IndexResponse.INVALID, error="cannot decode image"
            )
        if image.startswith(b"FAIL"):
            return dedup_pb2.IndexResponse(
                id=request.id, status=dedup_pb2.IndexResponse.FAILED, error="backend down"
            )
        with self._lock:
            self.stored[request.id] = dict(request.metadata)
        return dedup_pb2.IndexResponse(id=request.id, status=dedup_pb2.IndexResponse.INDEXED)

    def IndexStream(
        self, request_iterator: Iterator[dedup_pb2.IndexRequest], context: grpc.ServicerContext
    ) -> Iterator[dedup_pb2.IndexResponse]:
        self._record(context)
        pending: list[dedup_pb2.IndexResponse] = []
        for request in request_iterator:
            pending.append(self._index_one(request, context))
            if len(pending) == 3:
                yield from reversed(pending)
                pending.clear()
        yield from reversed(pending)

    def DeleteImages(
        self, request: dedup_pb2.DeleteImagesRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.DeleteImagesResponse:
        self._record(context)
        deleted, not_found = 0, []
        with self._lock:
            for image_id in request.ids:
                if self.stored.pop(image_id, None) is None:
                    not_found.append(image_id)
                else:
                    deleted += 1
        return dedup_pb2.DeleteImagesResponse(deleted_count=deleted, not_found=not_found)

    def GetStats(
        self, request: dedup_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> dedup_pb2.GetStatsResponse:
        self._record(context)
        model = dedup_pb2.ModelInfo(
            name="efficientnet-lite0" if self.fallback else "resnet50-imagenet1k_v1",
            version="abc123",
            embedding_dim=1280 if self.fallback else 2048,
            fallback=self.fallback,
            warning="ResNet-50 weights not found" if self.fallback else "",
        )
        with self._lock:
            count = len(self.stored)
        return dedup_pb2.GetStatsResponse(
            collections=[
                dedup_pb2.CollectionStats(
                    name="default", image_count=count, model=model.name, index=INDEX_INFO
                )
            ],
            model=model,
            index=INDEX_INFO,
            default_threshold=0.92,
            default_top_k=10,
            threshold_source="calibration",
        )


@dataclass(frozen=True)
class Served:
    fake: FakeDedup
    target: str


@pytest.fixture
def served() -> Iterator[Served]:
    executor = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(executor)
    fake = FakeDedup()
    dedup_pb2_grpc.add_DeduplicationServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Served(fake, f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None).wait()
        executor.shutdown(wait=True)


@pytest.fixture
def client(served: Served) -> Iterator[DedupClient]:
    with DedupClient(served.target, timeout=10) as c:
        yield c


@pytest.fixture
def free_target() -> str:
    """An address nobody listens on: bind to get a free port, then release it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "a.png").write_bytes(b"PNG-a")
    (root / "b.JPG").write_bytes(b"JPG-b")
    (root / "nested" / "c.jpeg").write_bytes(b"JPG-c")
    (root / "nested" / "deeper" / "dup.webp").write_bytes(b"DUP-d")
    (root / "bad.gif").write_bytes(b"BAD-e")
    (root / "notes.txt").write_bytes(b"not an image")
    (root / "broken.png").symlink_to(root / "missing.png")  # listed, but unreadable
    return root


# -- client ----------------------------------------------------------------------------------


def test_check_returns_dataclasses(client: DedupClient) -> None:
    result = client.check(b"DUP-1", threshold=0.8)
    assert result.is_duplicate
    assert [m.id for m in result.matches] == ["existing"]
    assert result.matches[0].similarity == pytest.approx(0.9731)
    assert result.matches[0].metadata == {"path": "old.png"}
    assert result.model == "fake-model"
    assert result.threshold == 0.8  # float32 noise removed


def test_check_insert_if_unique(served: Served, client: DedupClient) -> None:
    result = client.check(b"NEW", insert_if_unique=True, id="new-1", metadata={"k": "v"})
    assert not result.is_duplicate and result.inserted
    assert served.fake.stored["new-1"] == {"k": "v"}


def test_index_yields_one_result_per_item_in_any_order(client: DedupClient) -> None:
    images = {"i0": b"x0", "i1": b"DUP1", "i2": b"BAD2", "i3": b"x3", "i4": b"FAIL4"}
    items = (IndexItem(id=k, image=v) for k, v in images.items())
    results = list(client.index(items))
    assert sorted(r.id for r in results) == sorted(images)
    assert [r.id for r in results] != list(images)  # the fake reorders
    by_id = {r.id: r for r in results}
    assert by_id["i0"].status is IndexStatus.INDEXED
    assert by_id["i1"].status is IndexStatus.DUPLICATE
    assert by_id["i1"].matches[0].id == "existing"
    assert by_id["i2"].status is IndexStatus.INVALID
    assert by_id["i2"].error == "cannot decode image"
    assert by_id["i4"].status is IndexStatus.FAILED


def test_index_reraises_the_request_iterables_own_error(client: DedupClient) -> None:
    def items() -> Iterator[IndexItem]:
        yield IndexItem(id="ok", image=b"x")
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        list(client.index(items()))


def test_index_opens_a_new_stream_every_items_per_stream(served: Served, client: DedupClient) -> None:
    streams_before = len(served.fake.received_metadata)
    results = list(client.index((IndexItem(id=f"i{n}", image=b"x") for n in range(5)), items_per_stream=2))
    assert sorted(r.id for r in results) == [f"i{n}" for n in range(5)]
    assert len(served.fake.received_metadata) - streams_before == 3  # 2 + 2 + 1, and no empty fourth


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # top_k is a uint32 on the wire: a negative value cannot even be put in the request.
        pytest.param(lambda c: c.check(b"x", top_k=-1), "out of range", id="negative-top-k"),
        pytest.param(lambda c: c.check(b"x", top_k=2**32), "out of range", id="top-k-over-uint32"),
        pytest.param(lambda c: list(c.index([], items_per_stream=0)), "items_per_stream", id="zero-items-per-stream"),
    ],
)
def test_values_the_wire_cannot_carry_fail_in_the_client(client: DedupClient, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(client)


def test_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="together"):
        DedupClient("127.0.0.1:1", client_cert=b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        pytest.param(lambda c: c.check(b""), "INVALID_ARGUMENT", id="check-empty"),
        pytest.param(
            lambda c: c.check(b"x", insert_if_unique=True), "INVALID_ARGUMENT", id="insert-no-id"
        ),
        pytest.param(
            lambda c: list(c.index([IndexItem(id="a", image=b"ABORT")])),
            "INVALID_ARGUMENT",
            id="stream-abort",
        ),
    ],
)
def test_server_errors_become_dedup_error(client: DedupClient, call, code: str) -> None:
    with pytest.raises(DedupError) as info:
        call(client)
    assert info.value.code == code
    assert info.value.details
    assert not isinstance(info.value, DedupConnectionError)


def test_unreachable_server_is_a_connection_error(free_target: str) -> None:
    with DedupClient(free_target, timeout=5) as c, pytest.raises(DedupConnectionError) as info:
        c.stats()
    assert info.value.code == "UNAVAILABLE"
    assert free_target in str(info.value)


def test_token_is_sent_as_bearer_metadata(served: Served) -> None:
    with DedupClient(served.target, token="s3cret") as c:
        c.stats()
    assert served.fake.received_metadata[-1]["authorization"] == "Bearer s3cret"


def test_delete_and_stats(client: DedupClient) -> None:
    result = client.delete(["existing", "nope"])
    assert result.deleted_count == 1
    assert result.not_found == ("nope",)
    stats = client.stats()
    assert stats.collections[0].image_count == 0
    assert stats.default_threshold == 0.92
    assert stats.index.build_params == {"M": "16"}
    assert not stats.model.fallback


# -- files -----------------------------------------------------------------------------------


def test_find_images_filters_and_sorts(image_dir: Path) -> None:
    listing = find_images(image_dir)
    assert [f.relative for f in listing.files] == [
        "a.png",
        "b.JPG",
        "bad.gif",
        "broken.png",
        "nested/c.jpeg",
        "nested/deeper/dup.webp",
    ]
    flat = find_images(image_dir, recursive=False)
    assert "nested/c.jpeg" not in [f.relative for f in flat.files]


def test_items_read_files_only_when_pulled(image_dir: Path) -> None:
    files = find_images(image_dir).files
    errors: list[str] = []
    items = iter_index_items(
        files, id_mode=IdMode.RELATIVE, on_read_error=lambda f, e: errors.append(f.relative)
    )
    (image_dir / "a.png").write_bytes(b"changed after listing")
    first = next(items)
    assert first.id == "a.png"
    assert first.image == b"changed after listing"
    assert first.metadata == {"path": "a.png", "file": str((image_dir / "a.png").absolute())}
    rest = list(items)
    assert errors == ["broken.png"]
    assert len(rest) == len(files) - 2


# -- CLI -------------------------------------------------------------------------------------


def test_cli_index_reports_counts_and_exits_1_on_bad_files(
    served: Served, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--target", served.target, "index", str(image_dir)])
    out = capsys.readouterr().out
    assert code == 1
    assert "6 files in" in out and "images/s" in out
    assert "INDEXED    3" in out
    assert "DUPLICATE  1" in out
    assert "INVALID    1" in out
    assert "FAILED     1" in out
    assert "nested/deeper/dup.webp -> existing (0.9731)" in out
    assert "bad.gif: cannot decode image" in out
    assert "broken.png: cannot read file" in out
    assert served.fake.stored["nested/c.jpeg"] == {"path": "nested/c.jpeg",
                                                   "file": str((image_dir / "nested" / "c.jpeg").absolute())}
    assert "notes.txt" not in served.fake.stored


def test_cli_index_all_good_exits_0_and_json(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "one.png").write_bytes(b"1")
    (tmp_path / "sub" / "two.png").write_bytes(b"DUP2")
    (tmp_path / "sub" / "three.heic").write_bytes(b"3")
    code = main(
        ["index", str(tmp_path), "--json", "--target", served.target, "--extensions", ".heic"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["counts"] == {"INDEXED": 2, "DUPLICATE": 1, "INVALID": 0, "FAILED": 0}
    assert report["duplicates"][0]["path"] == "sub/two.png"
    assert report["duplicates"][0]["match"]["id"] == "existing"
    assert report["problems"] == []


def test_cli_index_name_mode_and_no_recursive(
    served: Served, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--target", served.target, "index", str(image_dir), "--no-recursive", "--id-mode", "name"]
    )
    out = capsys.readouterr().out
    assert code == 1  # bad.gif and broken.png are still there
    assert "4 files in" in out
    assert "a.png" in served.fake.stored and "c.jpeg" not in served.fake.stored


def test_cli_index_name_collisions_are_a_usage_error(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "same.png").write_bytes(b"1")
    (tmp_path / "x" / "same.png").write_bytes(b"2")
    code = main(["--target", served.target, "index", str(tmp_path), "--id-mode", "name"])
    assert code == 2
    assert "same.png" in capsys.readouterr().err


def test_cli_index_stream_error_exits_2(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_bytes(b"ABORT")
    code = main(["--target", served.target, "index", str(tmp_path)])
    assert code == 2
    assert "error: INVALID_ARGUMENT: stream refused" in capsys.readouterr().err


def test_cli_index_missing_folder(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", served.target, "index", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cli_check_text_and_json(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "q.png"
    image.write_bytes(b"DUP-q")
    assert main(["--target", served.target, "check", str(image), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "duplicate: yes" in out
    assert "existing  0.9731  path=old.png" in out
    assert "model: fake-model" in out
    assert "threshold: 0.9200" in out

    argv = ["--target", served.target, "--json", "check", str(image), "--threshold", "0.5"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["is_duplicate"] is True
    assert result["threshold"] == 0.5
    assert result["matches"][0]["id"] == "existing"


def test_cli_check_insert(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "fresh.png"
    image.write_bytes(b"fresh")
    assert main(["--target", served.target, "check", str(image), "--insert", "--id", "f1"]) == 0
    out = capsys.readouterr().out
    assert "duplicate: no" in out and "inserted: yes" in out
    assert served.fake.stored["f1"] == {"path": "fresh.png"}


def test_cli_check_insert_without_id_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", str(tmp_path / "x.png"), "--insert"])
    assert info.value.code == 2


def test_cli_server_error_is_printed_with_code(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["--target", served.target, "check", str(empty)]) == 2
    assert capsys.readouterr().err.strip() == "error: INVALID_ARGUMENT: image is empty"


@pytest.mark.parametrize(
    "fallback", [pytest.param(True, id="fallback"), pytest.param(False, id="production")]
)
def test_cli_stats(
    served: Served, fallback: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    served.fake.fallback = fallback
    assert main(["--target", served.target, "stats"]) == 0
    out = capsys.readouterr().out
    assert ("WARNING:" in out) is fallback
    if fallback:
        assert "ResNet-50 weights not found" in out
    assert "default threshold: 0.9200 (source: calibration)" in out
    assert "HNSW metric=COSINE build[M=16] search[ef=64]" in out
    assert "default: 1 images" in out


def test_cli_stats_json_keeps_warning_off_stdout(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    served.fake.fallback = True
    # Global flags are accepted after the subcommand too.
    assert main(["stats", "--json", "--target", served.target]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats["model"]["fallback"] is True
    assert stats["default_top_k"] == 10
    assert "WARNING:" in captured.err


def test_cli_delete(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", served.target, "delete", "existing", "ghost"]) == 0
    out = capsys.readouterr().out
    assert "deleted: 1" in out
    assert "not found: ghost" in out


def test_cli_env_target_and_token(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEDUP_TARGET", served.target)
    monkeypatch.setenv("DEDUP_TOKEN", "from-env")
    assert main(["stats"]) == 0
    assert served.fake.received_metadata[-1]["authorization"] == "Bearer from-env"


def test_cli_unreachable_server(free_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", free_target, "--timeout", "5", "stats"]) == 2
    assert f"error: cannot reach the dedup server at {free_target}" in capsys.readouterr().err
