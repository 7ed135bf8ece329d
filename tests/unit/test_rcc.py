"""The Qt resource bundle reader (dedup_eval.rcc) against bundles laid out as Qt's `rcc --binary` writes them."""

from __future__ import annotations

import base64
import dataclasses
import struct
import zlib
from pathlib import Path

import pytest
from dedup_eval.rcc import (
    FLAG_COMPRESSED,
    FLAG_COMPRESSED_ZSTD,
    FLAG_DIRECTORY,
    LANGUAGE_C,
    RccError,
    parse_rcc,
    read_rcc,
)


def qt_hash(name: str) -> int:
    """qt_hash() over UTF-16 code units, as rcc stores it beside each name."""
    h = 0
    for unit in struct.unpack(f">{len(name.encode('utf-16-be')) // 2}H", name.encode("utf-16-be")):
        h = ((h << 4) + unit) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


@dataclasses.dataclass(frozen=True)
class File:
    content: bytes
    compressed: bool = False
    language: int = LANGUAGE_C
    territory: int = 0
    flags: int | None = None  # stored flags instead of the right ones
    payload: bytes | None = None  # stored data block instead of the right one


# A directory: name -> file content, File, list of File (one per locale, stored as nodes of one name) or directory.
Tree = dict[str, "File | bytes | list[File] | Tree"]


@dataclasses.dataclass(frozen=True)
class Bundle:
    data: bytes
    tree_offset: int
    node_size: int


def build_rcc(root: Tree, *, version: int = 3) -> Bundle:
    """A bundle in Qt's layout: header, data blocks, names, then the tree (breadth first, children by name hash)."""
    mtime = struct.pack(">Q", 1_700_000_000_000) if version >= 2 else b""
    data, names = bytearray(), bytearray()

    def name_offset(name: str) -> int:
        offset = len(names)
        encoded = name.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(encoded) // 2, qt_hash(name)) + encoded)
        return offset

    def file_node(name: str, file: File) -> bytes:
        payload = file.payload
        if payload is None:
            content = file.content
            payload = struct.pack(">I", len(content)) + zlib.compress(content) if file.compressed else content
        offset = len(data)
        data.extend(struct.pack(">I", len(payload)) + payload)
        flags = file.flags if file.flags is not None else (FLAG_COMPRESSED if file.compressed else 0)
        return struct.pack(">IHHHI", name_offset(name), flags, file.territory, file.language, offset) + mtime

    # Breadth first: a directory's children get consecutive indices after every node already placed.
    nodes: list[bytes] = [b""]
    queue: list[tuple[int, str, Tree]] = [(0, "", root)]
    while queue:
        index, name, directory = queue.pop(0)
        children: list[tuple[str, File | Tree]] = []
        for child, entry in sorted(directory.items(), key=lambda item: qt_hash(item[0])):
            if isinstance(entry, list):
                children.extend((child, variant) for variant in entry)
            else:
                children.append((child, File(entry) if isinstance(entry, bytes) else entry))
        first = len(nodes)
        for offset, (child, entry) in enumerate(children):
            if isinstance(entry, File):
                nodes.append(file_node(child, entry))
            else:
                nodes.append(b"")
                queue.append((first + offset, child, entry))
        own_name = name_offset(name) if index else 0
        nodes[index] = struct.pack(">IHII", own_name, FLAG_DIRECTORY, len(children), first) + mtime

    header_size = 24 if version >= 3 else 20
    names_start = header_size + len(data)
    tree_start = names_start + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_start, header_size, names_start)
    if version >= 3:
        header += struct.pack(">I", FLAG_COMPRESSED)  # the bundle's overall flags
    node_size = 14 if version == 1 else 22
    assert all(len(node) == node_size for node in nodes)
    return Bundle(header + bytes(data) + bytes(names) + b"".join(nodes), tree_start, node_size)


PHOTO = bytes(range(256)) * 40
SAMPLE: Tree = {
    "gcompris": {
        "src": {
            "erase": {
                "heron.webp": File(PHOTO, compressed=True),
                "notes.txt": b"plain, not compressed",
                "empty.bin": b"",
            },
            "lang": {"words.json": File(b'{"a": 1}' * 50, compressed=True)},
        },
    },
    "top.qml": "Ünïcode: 写真".encode(),
    "写真.txt": b"a non-ASCII name",
}
EXPECTED = {
    "gcompris/src/erase/heron.webp": PHOTO,
    "gcompris/src/erase/notes.txt": b"plain, not compressed",
    "gcompris/src/erase/empty.bin": b"",
    "gcompris/src/lang/words.json": b'{"a": 1}' * 50,
    "top.qml": "Ünïcode: 写真".encode(),
    "写真.txt": b"a non-ASCII name",
}


# Written by Qt 5.15.8's `rcc --binary` (format 3, zlib) from this .qrc, sub/deeper/text.txt being "hello " * 500:
#   <qresource prefix="/"><file>sub/deeper/text.txt</file><file>sub/é写.txt</file></qresource>
#   <qresource prefix="/loc" lang="de"><file alias="x.txt">sub/é写.txt</file></qresource>
#   <qresource prefix="/loc"><file alias="x.txt">sub/deeper/text.txt</file></qresource>
QT_RCC = base64.b64decode(
    "cXJlcwAAAAMAAADoAAAAGAAAAIYAAAABAAAAKQAAC7l4nMtIzcnJV8gYJUfJUXKUHCVHyVFylBwlR8lRchCTXAC00E3XAAAA"
    "BnNtYWxsCgAAAAZzbWFsbAoAAAApAAALuXicy0jNyclXyBglR8lRcpQcJUfJUXKUHCVHyVFyEJNcALTQTdcAAwAAerIAcwB1"
    "AGIAAwAAc1MAbABvAGMABQB7W/QAeAAuAHQAeAB0AAYALFs0AOlRmQAuAHQAeAB0AAYGq8bCAGQAZQBlAHAAZQByAAgM91S0"
    "AHQAZQB4AHQALgB0AHgAdAAAAAAAAgAAAAIAAAABAAABi8/laAAAAAAMAAIAAAACAAAABgAAAYvP5WgAAAAAAAACAAAAAgAA"
    "AAMAAAGLz+VoAAAAACgAAAAAAAEAAAA3AAABi8/laAAAAAA6AAIAAAABAAAABQAAAYvP5WgAAAAATAABAAAAAQAAAEEAAAGL"
    "z+VoAAAAABgAAQAAAAEAAAAAAAABi8/laAAAAAAYAAAAAAAqAAAALQAAAYvP5WgA"
)


def test_reads_a_bundle_written_by_qt_rcc() -> None:
    hello = b"hello " * 500 + b"\n"
    assert parse_rcc(QT_RCC) == {"sub/deeper/text.txt": hello, "sub/é写.txt": b"small\n", "loc/x.txt": hello}


@pytest.mark.parametrize("version", [pytest.param(v, id=f"v{v}") for v in (1, 2, 3)])
def test_reads_every_file_with_its_path(version: int) -> None:
    assert parse_rcc(build_rcc(SAMPLE, version=version).data) == EXPECTED


def test_read_rcc_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "erase.rcc"
    path.write_bytes(build_rcc(SAMPLE).data)
    assert read_rcc(path) == EXPECTED


def test_an_empty_bundle_has_no_files() -> None:
    assert parse_rcc(build_rcc({}).data) == {}


@pytest.mark.parametrize("german_first", [pytest.param(True, id="translation-first"),
                                          pytest.param(False, id="default-first")])
def test_the_default_locale_wins_over_a_translation(german_first: bool) -> None:
    german, default = File(b"deutsch", language=42, territory=82), File(b"default")
    variants = [german, default] if german_first else [default, german]
    assert parse_rcc(build_rcc({"a.txt": variants, "b.txt": b"b"}).data) == {"a.txt": b"default", "b.txt": b"b"}


def test_a_file_only_stored_for_one_locale_is_read() -> None:
    assert parse_rcc(build_rcc({"a.txt": [File(b"deutsch", language=42)]}).data) == {"a.txt": b"deutsch"}


def _patched(bundle: Bundle, node: int, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(bundle.data)
    struct.pack_into(fmt, data, bundle.tree_offset + node * bundle.node_size + offset, value)
    return bytes(data)


def _node_of(bundle: Bundle, name: str) -> int:
    """The index of the tree node named `name` (found by its name's offset)."""
    names_start = struct.unpack_from(">I", bundle.data, 16)[0]
    count = (len(bundle.data) - bundle.tree_offset) // bundle.node_size
    for node in range(1, count):
        (name_offset,) = struct.unpack_from(">I", bundle.data, bundle.tree_offset + node * bundle.node_size)
        (length,) = struct.unpack_from(">H", bundle.data, names_start + name_offset)
        raw = bundle.data[names_start + name_offset + 6:names_start + name_offset + 6 + 2 * length]
        if raw.decode("utf-16-be") == name:
            return node
    raise KeyError(name)


SMALL: Tree = {"dir": {"a.webp": File(PHOTO, compressed=True)}, "b.txt": b"plain"}


def _malformed() -> list[object]:
    small = build_rcc(SMALL)
    a, b, d = _node_of(small, "a.webp"), _node_of(small, "b.txt"), _node_of(small, "dir")
    return [
        pytest.param(b"", "no 'qres' magic", id="empty"),
        pytest.param(b"PK\x03\x04" + small.data[4:], "no 'qres' magic", id="not-a-bundle"),
        pytest.param(small.data[:12], "header", id="truncated-header"),
        pytest.param(b"qres" + struct.pack(">I", 9) + small.data[8:], "unsupported resource format version 9",
                     id="unknown-version"),
        pytest.param(small.data[:-16], "outside the file", id="truncated-tree"),
        pytest.param(_patched(small, a, 10, ">I", 10**6), "outside the file", id="data-offset-past-end"),
        pytest.param(_patched(small, b, 0, ">I", 10**6), "outside the file", id="name-offset-past-end"),
        pytest.param(_patched(small, 0, 10, ">I", 10**6), "outside the file", id="children-past-end"),
        pytest.param(_patched(small, 0, 4, ">H", 0), "should be a directory", id="root-not-a-directory"),
        pytest.param(_patched(small, d, 10, ">I", 0), "loop in the tree", id="directory-loop"),
        pytest.param(_patched(small, b, 4, ">H", FLAG_COMPRESSED), "no size prefix|not a zlib stream",
                     id="plain-data-flagged-compressed"),
        pytest.param(_patched(small, a, 4, ">H", FLAG_COMPRESSED_ZSTD), "zstd", id="zstd"),
        pytest.param(build_rcc({"a": File(b"x", flags=FLAG_COMPRESSED, payload=b"\x00\x00")}).data, "no size prefix",
                     id="short-prefix"),
        pytest.param(build_rcc({"a": File(b"x", flags=FLAG_COMPRESSED,
                                          payload=struct.pack(">I", 99) + zlib.compress(b"x"))}).data,
                     "decompresses to 1 bytes, its prefix says 99", id="wrong-size-prefix"),
        pytest.param(build_rcc({"a": File(b"x", flags=FLAG_COMPRESSED, payload=struct.pack(">I", 1) + b"junk")}).data,
                     "not a zlib stream", id="corrupt-zlib"),
    ]


@pytest.mark.parametrize(("data", "message"), _malformed())
def test_malformed_bundles_raise_rcc_error(data: bytes, message: str) -> None:
    with pytest.raises(RccError, match=message):
        parse_rcc(data)


def test_read_rcc_names_the_file_in_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.rcc"
    path.write_bytes(b"qres" + b"\x00" * 3)
    with pytest.raises(RccError, match="broken.rcc"):
        read_rcc(path)
    with pytest.raises(RccError, match="cannot read"):
        read_rcc(tmp_path / "missing.rcc")


def test_rcc_error_is_a_value_error() -> None:
    assert issubclass(RccError, ValueError)
