"""Tiles and entry bundles (C2SP tlog-tiles, "Merkle Tree", "Partial Tiles", "Log entries").

A tile at level ``L`` holds up to 256 consecutive Merkle tree hashes of tree level ``8 * L``;
the ``n``-th full tile of level ``L`` spans leaves ``[n * 256**(L+1), (n+1) * 256**(L+1))``.
Paths are ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]`` with ``<N>`` in 3-digit
groups, all but the last prefixed with ``x``. Every parser here rejects anything not exactly
canonical with ``ValueError``. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from bastion.ledger.merkle import HASH_SIZE, MAX_TREE_SIZE, node_hash

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileNodeReader",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "entries_path",
    "parse_tile_path",
    "split_tile",
    "tile_path",
    "tile_width",
    "tiles_for_size",
]

#: tlog-tiles: a tile is the subtree of height 8 over 256 hashes.
TILE_HEIGHT = 8
TILE_WIDTH = 256
#: tlog-tiles: "<L> ... MUST be a decimal ASCII integer between 0 and 63".
MAX_TILE_LEVEL = 63
#: tlog-tiles: entries are "big-endian uint16 length-prefixed".
MAX_ENTRY_SIZE = 0xFFFF
#: The largest tile index of any level (a tile index is at most the tree size).
_MAX_INDEX = MAX_TREE_SIZE

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"[0-9]{3}")


def _encode_index(index: int) -> str:
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def _check_index_width(index: int, width: int | None) -> None:
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"bad tile index {index}")
    if width is not None and not 1 <= width < TILE_WIDTH:
        raise ValueError(f"bad partial tile width {width}")


def _suffix(width: int | None) -> str:
    return "" if width is None else f".p/{width}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """tlog-tiles "Merkle Tree": ``tile/<L>/<N>[.p/<W>]``; ``width`` only for a partial tile
    (1 to 255), ``None`` for a full one."""
    if not 0 <= level <= MAX_TILE_LEVEL:
        raise ValueError(f"bad tile level {level}")
    _check_index_width(index, width)
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """tlog-tiles "Log entries": ``tile/entries/<N>[.p/<W>]``."""
    _check_index_width(index, width)
    return f"tile/entries/{_encode_index(index)}{_suffix(width)}"


def parse_tile_path(path: str) -> tuple[int | Literal["entries"], int, int | None]:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` into ``(level or
    "entries", index, width or None)``. ``ValueError`` on anything not exactly canonical:
    leading zeros in ``L`` or ``W``, a width of 0 or 256 or more, a level above 63, an index
    with a superfluous ``x000`` group, a missing ``x``, an index beyond uint64."""
    if not isinstance(path, str) or len(path) > 200:
        raise ValueError("not a tile path")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise ValueError("not a tile path")
    level: int | Literal["entries"]
    if parts[1] == "entries":
        level = "entries"
    elif _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= MAX_TILE_LEVEL:
        level = int(parts[1])
    else:
        raise ValueError("bad tile level")
    rest = parts[2:]
    width: int | None = None
    if rest[-1] != "" and len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not _WIDTH.fullmatch(w) or int(w) >= TILE_WIDTH:
            raise ValueError("bad partial tile width")
        width = int(w)
        rest = [*rest[:-2], rest[-2][:-2]]
    *prefixes, last = rest
    if not _GROUP.fullmatch(last):
        raise ValueError("bad tile index")
    groups = []
    for p in prefixes:
        if not (p.startswith("x") and _GROUP.fullmatch(p[1:])):
            raise ValueError("bad tile index")
        groups.append(p[1:])
    if groups and groups[0] == "000":
        raise ValueError("non-canonical tile index")
    index = int("".join([*groups, last]))
    if index > _MAX_INDEX:
        raise ValueError("tile index out of range")
    return level, index, width


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """tlog-tiles "Log entries": big-endian uint16 length-prefixed entries, 1 to 256."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise ValueError("an entry bundle holds 1 to 256 entries")
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError("an entry is at most 65535 bytes")
        out += len(entry).to_bytes(2, "big")
        out += entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; ``ValueError`` on a truncated length or entry, an empty
    bundle, or more than 256 entries."""
    entries: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        if len(entries) == TILE_WIDTH:
            raise ValueError("more than 256 entries in a bundle")
        if pos + 2 > n:
            raise ValueError("truncated entry length")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > n:
            raise ValueError("truncated entry")
        entries.append(bytes(data[pos : pos + length]))
        pos += length
    if not entries:
        raise ValueError("empty entry bundle")
    return entries


def split_tile(data: bytes) -> list[bytes]:
    """The 1 to 256 hashes of a tile; ``ValueError`` on any other length."""
    if not data or len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
        raise ValueError("a tile is 1 to 256 hashes of 32 bytes")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def tile_width(level: int, index: int, size: int) -> int:
    """The width of tile ``(level, index)`` in a tree of ``size`` leaves: 256 when full, the
    partial width otherwise, 0 when the tree does not reach it (tlog-tiles "Partial
    Tiles": ``floor(s / 256**l) mod 256`` for the rightmost tile)."""
    hashes = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, hashes - index * TILE_WIDTH))


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """Every tile ``(level, index, width)`` of a tree of ``size`` leaves, full ones (width
    256) and the partial one of each level, level by level (tlog-tiles "Partial Tiles")."""
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"bad tree size {size}")
    out: list[tuple[int, int, int]] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        hashes = size >> (TILE_HEIGHT * level)
        full, partial = divmod(hashes, TILE_WIDTH)
        out.extend((level, i, TILE_WIDTH) for i in range(full))
        if partial:
            out.append((level, full, partial))
        level += 1
    return out


def _tile_levels(hashes: list[bytes]) -> list[list[bytes]]:
    """The tile's hashes and every complete node above them inside the tile (up to 8
    levels): ``levels[h][i]`` is the node over hashes ``[i * 2**h, (i+1) * 2**h)``."""
    levels = [hashes]
    while len(levels[-1]) >= 2:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


class TileNodeReader:
    """A :data:`bastion.ledger.merkle.NodeReader` over tiles (tlog-tiles "Merkle Tree": the
    tree levels between two tile levels are recomputed from the tile's hashes).

    ``read_tile(level, index, width)`` returns the bytes of that tile. Without ``size`` the
    reader asks for the smallest width that holds the hashes it needs and accepts a wider
    tile (a store that has the full tile may return it). With ``size`` (the tree size being
    read, e.g. a checkpoint's) it asks for exactly the tile that tree has (256 for a full
    tile, the partial width otherwise) and requires exactly that, as a client fetching tiles
    by URL must. A few recent tiles are cached.
    """

    _CACHE = 64

    def __init__(
        self, read_tile: Callable[[int, int, int], bytes], size: int | None = None
    ) -> None:
        if size is not None and not 0 <= size <= MAX_TREE_SIZE:
            raise ValueError(f"bad tree size {size}")
        self._read = read_tile
        self._size = size
        self._cache: dict[tuple[int, int], list[list[bytes]]] = {}

    def _tile(self, level: int, index: int, need: int) -> list[list[bytes]]:
        cached = self._cache.get((level, index))
        if cached is not None and len(cached[0]) >= need:
            return cached
        if self._size is None:
            width = need
        else:
            width = tile_width(level, index, self._size)
            if width < need:
                raise ValueError(f"tile {level}/{index} is beyond the tree size")
        hashes = split_tile(self._read(level, index, width))
        if len(hashes) < need or (self._size is not None and len(hashes) != width):
            raise ValueError(f"tile {level}/{index} has {len(hashes)} hashes, wanted {width}")
        levels = _tile_levels(hashes)
        if len(self._cache) >= self._CACHE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[(level, index)] = levels
        return levels

    def __call__(self, level: int, k: int) -> bytes:
        if not 0 <= level <= MAX_TILE_LEVEL * TILE_HEIGHT + TILE_HEIGHT - 1 or k < 0:
            raise ValueError(f"bad node ({level}, {k})")
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = k << height  # the first hash of tree level 8 * tile_level it covers
        index, offset = divmod(first, TILE_WIDTH)
        levels = self._tile(tile_level, index, offset + (1 << height))
        return levels[height][offset >> height]
