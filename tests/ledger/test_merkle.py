"""RFC 9162 2.1 hashing and proofs (bastion.ledger.merkle), checked exhaustively on small
trees, with hypothesis on trees up to 4096 leaves, and against an independent implementation
(pymerkle, RFC 9162 hashing with the 0x00/0x01 prefixes) on the same trees."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger import merkle
from bastion.ledger.merkle import (
    EMPTY_ROOT,
    MemoryNodeReader,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    subtree_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

MAX = 4096


def entry(i: int) -> bytes:
    return b"entry %d" % i


@lru_cache(maxsize=1)
def big() -> tuple[list[bytes], MemoryNodeReader]:
    leaves = [leaf_hash(entry(i)) for i in range(MAX)]
    return leaves, MemoryNodeReader(leaves)


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH, written as the RFC's recursion."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def test_hashes_are_rfc9162():
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert merkle.root([]) == EMPTY_ROOT
    # RFC 6962's test vector (the empty tree and the one-empty-leaf tree).
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_roots_of_every_prefix_match_the_rfc_recursion_and_the_builder():
    leaves, node = big()
    builder = TreeBuilder()
    for n in range(0, 300):
        assert merkle.root(leaves[:n]) == reference_root(leaves[:n]) == builder.root()
        assert tree_root(n, node) == builder.root()
        builder.append(leaves[n])


def test_tree_builder_returns_every_completed_node():
    leaves, node = big()
    builder = TreeBuilder()
    seen: dict[tuple[int, int], bytes] = {}
    for i in range(1100):
        done = builder.append(leaves[i])
        assert done[0] == (0, i, leaves[i])
        assert [lvl for lvl, _, _ in done] == list(range(len(done)))
        # Leaf i completes exactly one node per trailing one bit of i.
        assert len(done) == 1 + ((i + 1) & -(i + 1)).bit_length() - 1
        for level, k, h in done:
            assert (k + 1) << level == i + 1  # the node ends at the new leaf
            assert h == node(level, k)
            assert (level, k) not in seen
            seen[(level, k)] = h
        assert builder.size == i + 1
        assert len(builder.edge) == (i + 1).bit_count()
        assert builder.root() == tree_root(i + 1, node)
    # Every complete node of the 1100-leaf tree was returned once.
    expected = {(lvl, k) for lvl in range(11) for k in range(1100 >> lvl)}
    assert set(seen) == expected


def test_tree_builder_resumes_from_its_saved_edge():
    leaves, _ = big()
    a = TreeBuilder()
    for h in leaves[:777]:
        a.append(h)
    b = TreeBuilder(a.size, a.edge)
    for h in leaves[777:900]:
        assert a.append(h) == b.append(h)
    assert a.root() == b.root() == merkle.root(leaves[:900])
    with pytest.raises(ValueError):
        TreeBuilder(5, a.edge)
    with pytest.raises(ValueError):
        TreeBuilder(1, [b"short"])
    with pytest.raises(ValueError):
        a.append(b"not a hash")


@pytest.mark.parametrize("size", range(1, 65))
def test_every_inclusion_proof_of_small_trees(size):
    leaves, node = big()
    r = tree_root(size, node)
    for index in range(size):
        proof = inclusion_proof(index, size, node)
        assert verify_inclusion(leaves[index], index, size, proof, r)
        if size > 1:
            assert not verify_inclusion(leaves[index], (index + 1) % size, size, proof, r)
            assert not verify_inclusion(leaves[(index + 1) % size], index, size, proof, r)
        if proof:
            assert not verify_inclusion(leaves[index], index, size, proof[:-1], r)
            assert not verify_inclusion(leaves[index], index, size, [*proof, proof[0]], r)
            bad = list(proof)
            bad[-1] = bytes([bad[-1][0] ^ 1]) + bad[-1][1:]
            assert not verify_inclusion(leaves[index], index, size, bad, r)


@pytest.mark.parametrize("new", range(1, 65))
def test_every_consistency_proof_of_small_trees(new):
    _, node = big()
    new_root = tree_root(new, node)
    for old in range(0, new + 1):
        old_root = tree_root(old, node)
        proof = consistency_proof(old, new, node)
        assert verify_consistency(old, new, old_root, new_root, proof)
        if old:  # the empty tree is consistent with every tree
            assert not verify_consistency(old, new, old_root, tree_root(new - 1, node), proof)
        if 0 < old < new:
            assert proof
            assert not verify_consistency(old, new, new_root, new_root, proof)
            # (The sizes only shape the proof: a proof can hold for other sizes of the same
            # shape, which is why the sizes come from the signed checkpoints.)
            assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
            assert not verify_consistency(old, new, old_root, new_root, [*proof, proof[0]])
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                assert not verify_consistency(old, new, old_root, new_root, bad)
        else:
            assert proof == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_inclusion_proofs_hypothesis(data):
    leaves, node = big()
    size = data.draw(st.integers(1, MAX), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    r = tree_root(size, node)
    proof = inclusion_proof(index, size, node)
    assert len(proof) <= (size - 1).bit_length()
    assert verify_inclusion(leaves[index], index, size, proof, r)
    other = data.draw(st.integers(0, size - 1), label="other")
    if other != index:
        assert not verify_inclusion(leaves[other], index, size, proof, r)
        assert not verify_inclusion(leaves[index], other, size, proof, r)
    if size < MAX:
        assert not verify_inclusion(leaves[index], index, size, proof, tree_root(size + 1, node))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_consistency_proofs_hypothesis(data):
    _, node = big()
    new = data.draw(st.integers(1, MAX), label="new")
    old = data.draw(st.integers(0, new), label="old")
    proof = consistency_proof(old, new, node)
    old_root, new_root = tree_root(old, node), tree_root(new, node)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        # A fork: the same sizes, a different old tree.
        forked = list(big()[0][:old])
        forked[-1] = leaf_hash(b"forged")
        assert not verify_consistency(old, new, merkle.root(forked), new_root, proof)
        other = data.draw(st.integers(1, MAX), label="other")
        if other != new:
            assert not verify_consistency(old, other, old_root, tree_root(other, node), proof) or (
                consistency_proof(old, other, node) == proof and tree_root(other, node) == new_root
            )


def test_subtree_hash_and_its_rejections():
    leaves, node = big()
    assert subtree_hash(4, 7, node) == merkle.root(leaves[4:7])
    assert subtree_hash(8, 13, node) == merkle.root(leaves[8:13])
    assert subtree_hash(0, 1000, node) == merkle.root(leaves[:1000])
    for start, end in [(1, 3), (2, 7), (3, 3), (5, 4), (-1, 1)]:
        with pytest.raises(ValueError):
            subtree_hash(start, end, node)


def test_bad_arguments():
    _, node = big()
    with pytest.raises(ValueError):
        inclusion_proof(5, 5, node)
    with pytest.raises(ValueError):
        inclusion_proof(-1, 5, node)
    with pytest.raises(ValueError):
        consistency_proof(6, 5, node)
    with pytest.raises(ValueError):
        tree_root(2**64, node)
    h = leaf_hash(b"x")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 0, [], h)
    assert not verify_inclusion(h, 0, 2**64, [], h)
    assert not verify_inclusion(h, -1, 1, [], h)
    assert not verify_inclusion(h[:31], 0, 1, [], h[:31])
    assert not verify_inclusion(h, 0, 2, [b"x"], h)
    assert not verify_inclusion(h, 0, 2**63, [h] * 64, h)
    assert not verify_consistency(0, 5, EMPTY_ROOT, h, [h])
    assert not verify_consistency(0, 5, h, h, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, h, [])
    assert not verify_consistency(5, 5, h, EMPTY_ROOT, [])
    assert not verify_consistency(5, 5, h, h, [h])
    assert not verify_consistency(6, 5, h, h, [])
    assert not verify_consistency(3, 5, h, h, [])
    assert not verify_consistency(3, 5, h, h, [b"short"])
    assert not verify_consistency(3, 2**64, h, h, [h])


# -- cross-check against pymerkle -----------------------------------------------------------


@lru_cache(maxsize=1)
def pymerkle_tree() -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for i in range(MAX):
        tree.append_entry(entry(i))
    return tree


def test_pymerkle_hashes_leaves_as_rfc9162():
    tree = pymerkle_tree()
    leaves, _ = big()
    assert tree.get_leaf(1) == leaves[0] == hashlib.sha256(b"\x00" + entry(0)).digest()


@pytest.mark.parametrize("size", [*range(1, 70), 127, 128, 129, 1000, 1023, 1024, 1025, MAX])
def test_roots_and_inclusion_paths_match_pymerkle(size):
    tree = pymerkle_tree()
    leaves, node = big()
    r = tree_root(size, node)
    assert tree.get_root(size) == r
    for index in sorted({0, size // 3, size // 2, size - 1}):
        theirs = tree.prove_inclusion(index + 1, size)  # pymerkle counts leaves from 1
        ours = inclusion_proof(index, size, node)
        # pymerkle's path is the leaf itself followed by RFC 9162's audit path.
        path = [bytes.fromhex(h) for h in theirs.serialize()["path"]]
        assert path == [leaves[index], *ours]
        theirs.verify(leaves[index], r)  # raises on failure
        assert verify_inclusion(leaves[index], index, size, path[1:], tree.get_root(size))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_consistency_proofs_agree_with_pymerkle(data):
    tree = pymerkle_tree()
    _, node = big()
    new = data.draw(st.integers(2, MAX), label="new")
    old = data.draw(st.integers(1, new - 1), label="old")
    old_root, new_root = tree.get_root(old), tree.get_root(new)
    assert (old_root, new_root) == (tree_root(old, node), tree_root(new, node))
    tree.prove_consistency(old, new).verify(old_root, new_root)
    assert verify_consistency(old, new, old_root, new_root, consistency_proof(old, new, node))
    with pytest.raises(pymerkle.InvalidProof):
        tree.prove_consistency(old, new).verify(
            tree.get_root(new - 1) if new - 1 != old else leaf_hash(b"x"), new_root
        )
