"""tlog-tiles paths, entry bundles, the tiles of a tree size, and a NodeReader over tiles
(bastion.ledger.tiles) giving the same hashes as the in-memory tree."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger import merkle
from bastion.ledger.merkle import MemoryNodeReader, TreeBuilder, leaf_hash
from bastion.ledger.tiles import (
    TileNodeReader,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    parse_tile_path,
    split_tile,
    tile_path,
    tiles_for_size,
)


def test_the_spec_examples():
    # tlog-tiles "Merkle Tree": index 1234067 is x001/x234/067.
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert parse_tile_path("tile/0/x001/x234/067") == (0, 1234067, None)
    assert tile_path(0, 1234, 7) == "tile/0/x001/234.p/7"
    assert parse_tile_path("tile/0/x001/234.p/7") == (0, 1234, 7)
    assert tile_path(63, 0) == "tile/63/000"
    assert tile_path(2, 5, 255) == "tile/2/005.p/255"
    assert entries_path(1234067) == "tile/entries/x001/x234/067"
    assert entries_path(12, 112) == "tile/entries/012.p/112"
    assert parse_tile_path("tile/entries/012.p/112") == ("entries", 12, 112)
    assert parse_tile_path("tile/entries/000") == ("entries", 0, None)
    assert tile_path(1, 1000) == "tile/1/x001/000"
    assert tile_path(1, 2**64 - 1) == "tile/1/x018/x446/x744/x073/x709/x551/615"


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.integers(0, 63), st.just("entries")),
    st.integers(0, 2**64 - 1),
    st.one_of(st.none(), st.integers(1, 255)),
)
def test_paths_round_trip(level, index, width):
    path = entries_path(index, width) if level == "entries" else tile_path(level, index, width)
    assert parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "tile/0/",
        "tiles/0/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/+1/000",
        "tile/0/0",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/x000/001",  # a superfluous leading group
        "tile/0/001/001",  # a group without x
        "tile/0/x001",
        "tile/0/x01/001",
        "tile/0/X001/001",
        "tile/0/x001/x001",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000.p/1/",
        "tile/0/000.p/+1",
        "tile/0/000.q/1",
        "tile/0/00\u0661",  # a non-ASCII digit
        "tile/\u0660/000",
        "tile/0/x018/x446/x744/x073/x709/x551/616",  # 2**64
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        "tile/entries/0",
        "tile/entry/000",
        "tile/entries/000.p/256",
        "tile/0/./000",
        "tile/0/../000",
        "tile/0/000 ",
    ],
)
def test_non_canonical_paths_are_rejected(path):
    with pytest.raises(ValueError):
        parse_tile_path(path)


def test_bad_path_arguments():
    for args in [(64, 0), (-1, 0), (0, -1), (0, 2**64), (0, 0, 0), (0, 0, 256)]:
        with pytest.raises(ValueError):
            tile_path(*args)
    with pytest.raises(ValueError):
        entries_path(0, 256)


def test_entry_bundles():
    entries = [b"", b"a", b"\x00" * 300, bytes(range(256)), b"x" * 65535]
    data = encode_entry_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert decode_entry_bundle(data) == entries
    full = [b"%d" % i for i in range(256)]
    assert decode_entry_bundle(encode_entry_bundle(full)) == full
    with pytest.raises(ValueError):
        encode_entry_bundle([b"x" * 65536])
    with pytest.raises(ValueError):
        encode_entry_bundle([])
    with pytest.raises(ValueError):
        encode_entry_bundle([b""] * 257)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x02a",
        b"\x00\x01a\x00",
        b"\x00\x01a\x00\x05abcd",
        b"\xff\xff" + b"x" * 10,
        b"\x00\x00" * 257,
    ],
)
def test_malformed_entry_bundles(data):
    with pytest.raises(ValueError):
        decode_entry_bundle(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_entry_bundles_round_trip(entries):
    assert decode_entry_bundle(encode_entry_bundle(entries)) == entries


def test_split_tile():
    hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(256)]
    assert split_tile(b"".join(hashes)) == hashes
    assert split_tile(hashes[0]) == hashes[:1]
    for bad in [b"", b"x" * 31, b"x" * 33, b"x" * (32 * 257)]:
        with pytest.raises(ValueError):
            split_tile(bad)


def test_tiles_for_size_spec_examples():
    # tlog-tiles "Partial Tiles": a tree of size 70,000 is 273 full level 0 tiles, a partial
    # level 0 tile of width 112, one full level 1 tile, a partial level 1 tile of width 17 and
    # a partial level 2 tile of width 1.
    tiles = tiles_for_size(70000)
    assert tiles == [
        *[(0, i, 256) for i in range(273)],
        (0, 273, 112),
        (1, 0, 256),
        (1, 1, 17),
        (2, 0, 1),
    ]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile
    # of width 1."
    assert tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [(0, 0, 1)]
    assert tiles_for_size(257) == [(0, 0, 256), (0, 1, 1), (1, 0, 1)]
    with pytest.raises(ValueError):
        tiles_for_size(-1)


def build_tiles(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every tile (full and partial) of the tree of ``leaves`` from the nodes TreeBuilder
    completes: tile level L holds the nodes of tree level 8L."""
    nodes: dict[int, dict[int, bytes]] = defaultdict(dict)
    builder = TreeBuilder()
    for h in leaves:
        for level, k, node in builder.append(h):
            if level % 8 == 0:
                nodes[level // 8][k] = node
    tiles = {}
    for level, index, width in tiles_for_size(len(leaves)):
        tiles[(level, index, width)] = b"".join(
            nodes[level][k] for k in range(index * 256, index * 256 + width)
        )
    return tiles


def synthetic(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def reader_for(tiles, size=None):
    calls = []

    def read(level, index, width):
        calls.append((level, index, width))
        if size is not None:
            return tiles[(level, index, width)]
        # A store: the full tile if there is one, else the partial tile of the tree size.
        if (level, index, 256) in tiles:
            return tiles[(level, index, 256)]
        (data,) = [v for (lv, ix, _), v in tiles.items() if (lv, ix) == (level, index)]
        return data

    return TileNodeReader(read, size), calls


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 1000, 2047, 3000])
def test_tile_reader_matches_merkle(size):
    leaves = [leaf_hash(b"%d" % i) for i in range(size)]
    mem = MemoryNodeReader(leaves)
    tiles = build_tiles(leaves)
    for exact in (None, size):
        node, calls = reader_for(tiles, exact)
        assert merkle.tree_root(size, node) == merkle.tree_root(size, mem)
        for index in sorted({0, 1 % size, size // 2, size - 1}):
            assert merkle.inclusion_proof(index, size, node) == merkle.inclusion_proof(
                index, size, mem
            )
        for old in sorted({1, size // 3, size - 1} - {0}):
            assert merkle.consistency_proof(old, size, node) == merkle.consistency_proof(
                old, size, mem
            )
        for level in range(size.bit_length()):
            for k in range(0, size >> level, max(1, (size >> level) // 7)):
                assert node(level, k) == mem(level, k)
        if exact is not None:
            assert set(calls) <= set(tiles)  # asked only for the tiles that exist


def test_tile_reader_above_65536_leaves_levels_2():
    size = 70000
    leaves = synthetic(size)
    mem = MemoryNodeReader(leaves)
    tiles = build_tiles(leaves)
    assert (2, 0, 1) in tiles
    node, calls = reader_for(tiles, size)
    assert merkle.tree_root(size, node) == merkle.tree_root(size, mem) == merkle.root(leaves)
    for index in [0, 65535, 65536, 69887, 69888, 69999]:
        proof = merkle.inclusion_proof(index, size, node)
        assert proof == merkle.inclusion_proof(index, size, mem)
        assert merkle.verify_inclusion(leaves[index], index, size, proof, merkle.root(leaves))
    for old in [1, 256, 65536, 65537, 69999]:
        assert merkle.consistency_proof(old, size, node) == merkle.consistency_proof(old, size, mem)
    for level in range(17):
        assert node(level, 0) == mem(level, 0)
        last = (size >> level) - 1
        assert node(level, last) == mem(level, last)
    assert set(calls) <= set(tiles)
    # A smaller tree read from the same store's full and partial tiles.
    node2, _ = reader_for(tiles)
    assert merkle.tree_root(66000, node2) == merkle.root(leaves[:66000])


def test_tile_reader_rejects_short_or_missing_tiles():
    leaves = synthetic(300)
    tiles = build_tiles(leaves)
    node = TileNodeReader(lambda level, index, width: tiles[(0, 0, 256)][:64], 300)
    with pytest.raises(ValueError):
        node(0, 5)
    node = TileNodeReader(lambda level, index, width: b"x" * 33)
    with pytest.raises(ValueError):
        node(0, 0)
    node = TileNodeReader(lambda level, index, width: tiles[(level, index, width)], 300)
    with pytest.raises(ValueError):
        node(0, 300)  # beyond the tree
    with pytest.raises(ValueError):
        TileNodeReader(lambda *a: b"", -1)
