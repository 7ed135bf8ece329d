"""Reader of Qt's binary resource bundles (`.rcc` files, as written by `rcc --binary`, format versions 1 to 3).

The benchmark reads photos that GCompris ships inside such bundles; Qt itself is not needed for that.

Layout (all integers big-endian; offsets in the header count from the start of the file)::

    header   "qres"  version:u32  tree:u32  data:u32  names:u32  [flags:u32, version 3 only]
    tree     nodes of 14 bytes (version 1) or 22 bytes (2 and 3: an 8-byte modification time appended);
             node 0 is the root directory, and a directory's children are nodes [first, first + count)
               directory  name:u32  flags:u16 (0x02 set)  count:u32  first:u32  [mtime:u64]
               file       name:u32  flags:u16  territory:u16  language:u16  data:u32  [mtime:u64]
    names    at names + name: length:u16 (UTF-16 code units)  hash:u32  name (UTF-16BE)
    data     at data + data: length:u32  payload; with flag 0x01 the payload is qCompress output
             (uncompressed size:u32, then a zlib stream), with 0x04 a zstd frame

A path that is stored for several locales keeps the entry of the default (C) locale, else the first one.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MAGIC = b"qres"

FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04

LANGUAGE_C = 1  # QLocale::C: the entry used when no other locale matches

_MAX_DEPTH = 64


class RccError(ValueError):
    """The bundle is not a Qt binary resource file, or it is truncated or inconsistent."""


class _Reader:
    """Bounds-checked big-endian reads from one bundle."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def unpack(self, fmt: str, offset: int, what: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self.data):
            raise RccError(f"{what} at offset {offset} lies outside the file ({len(self.data)} bytes)")
        return struct.unpack_from(fmt, self.data, offset)

    def take(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise RccError(f"{what} ({size} bytes at offset {offset}) lies outside the file ({len(self.data)} bytes)")
        return self.data[offset:offset + size]


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file in the bundle at `path`, by its path inside the bundle (no leading slash or colon)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RccError(f"cannot read {path}: {exc}") from exc
    try:
        return parse_rcc(data)
    except RccError as exc:
        raise RccError(f"{path}: {exc}") from exc


def parse_rcc(data: bytes) -> dict[str, bytes]:
    """Every file in the bundle `data`, by its path inside the bundle (no leading slash or colon)."""
    reader = _Reader(data)
    if data[:4] != MAGIC:
        raise RccError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, data_start, names = reader.unpack(">IIII", 4, "header")
    if version not in (1, 2, 3):
        raise RccError(f"unsupported resource format version {version}")
    node_size = 14 if version == 1 else 22

    files: dict[str, bytes] = {}
    default_locale: set[str] = set()

    def name_of(name_offset: int) -> str:
        (length,) = reader.unpack(">H", names + name_offset, "name length")
        raw = reader.take(names + name_offset + 6, 2 * length, "name")
        try:
            return raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise RccError(f"name at offset {names + name_offset} is not UTF-16") from exc

    def payload(node: int, flags: int, data_offset: int) -> bytes:
        (length,) = reader.unpack(">I", data_start + data_offset, f"data length of node {node}")
        blob = reader.take(data_start + data_offset + 4, length, f"data of node {node}")
        if flags & FLAG_COMPRESSED_ZSTD:
            raise RccError(f"node {node} is zstd-compressed, which this reader does not support")
        if not flags & FLAG_COMPRESSED:
            return blob
        if len(blob) < 4:
            raise RccError(f"compressed data of node {node} has no size prefix")
        (expected,) = struct.unpack_from(">I", blob)
        try:
            content = zlib.decompress(blob[4:])
        except zlib.error as exc:
            raise RccError(f"compressed data of node {node} is not a zlib stream: {exc}") from exc
        if len(content) != expected:
            raise RccError(f"node {node} decompresses to {len(content)} bytes, its prefix says {expected}")
        return content

    def walk(directory: int, prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise RccError(f"directories nest deeper than {_MAX_DEPTH} levels (a loop in the tree?)")
        _, flags, count, first = reader.unpack(">IHII", tree + directory * node_size, f"tree node {directory}")
        if not flags & FLAG_DIRECTORY:
            raise RccError(f"tree node {directory} should be a directory")
        for child in range(first, first + count):
            offset = tree + child * node_size
            name_offset, child_flags = reader.unpack(">IH", offset, f"tree node {child}")
            path = prefix + name_of(name_offset)
            if child_flags & FLAG_DIRECTORY:
                if child <= directory:
                    raise RccError(f"tree node {directory} lists node {child} before itself (a loop in the tree)")
                walk(child, path + "/", depth + 1)
                continue
            _, language, data_offset = reader.unpack(">HHI", offset + 6, f"tree node {child}")
            if path in default_locale or (path in files and language != LANGUAGE_C):
                continue
            files[path] = payload(child, child_flags, data_offset)
            if language == LANGUAGE_C:
                default_locale.add(path)

    walk(0, "", 0)
    return files
