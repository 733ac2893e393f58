"""Merkle tree hashing, inclusion and consistency proofs (RFC 9162 section 2.1).

Pure: no I/O. Hashes are 32-byte ``bytes``. A tree is read through a :data:`NodeReader`,
``node(level, k)``: the hash of the complete subtree of ``2**level`` leaves covering leaves
``[k * 2**level, (k + 1) * 2**level)`` (level 0 is the leaf hash). Proof generation needs only
such complete subtrees; the incomplete subtrees of the right edge are computed from them.

Verification functions return ``False`` on anything wrong (bad sizes, wrong hash lengths,
over-long proofs) and never raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "MemoryNodeReader",
    "NodeReader",
    "TreeBuilder",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "subtree_hash",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

#: SHA-256 output size.
HASH_SIZE = 32
#: Tree sizes are uint64 (tlog-checkpoint, tlog-witness).
MAX_TREE_SIZE = 2**64 - 1
#: A proof in a tree of at most 2**64 - 1 leaves has at most 63 hashes (tlog-witness: "The
#: client MUST NOT send more than 63 consistency proof lines").
MAX_PROOF_HASHES = 63

#: (level, k) -> hash of the complete subtree covering leaves [k * 2**level, (k+1) * 2**level).
NodeReader = Callable[[int, int], bytes]

#: RFC 9162 2.1.1: the hash of an empty list is the hash of the empty string.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 2.1.1: ``MTH({d(0)}) = SHA-256(0x00 || d(0))``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: ``SHA-256(0x01 || MTH(left) || MTH(right))``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1: the Merkle Tree Hash of a whole list of leaf hashes."""
    builder = TreeBuilder()
    for leaf in leaf_hashes:
        builder.append(leaf)
    return builder.root()


def _check_range(start: int, end: int) -> None:
    if not (0 <= start < end <= MAX_TREE_SIZE):
        raise ValueError(f"not a non-empty leaf range: [{start}, {end})")


def subtree_hash(start: int, end: int, node: NodeReader) -> bytes:
    """The hash of the subtree over leaves ``[start, end)``.

    ``[start, end)`` must be a subtree in the sense of RFC 9162 2.1.1's recursion (and of
    draft-ietf-plants-merkle-tree-certs "Subtrees"): ``start`` is a multiple of the smallest
    power of two at least ``end - start``. Complete subtrees are read with ``node``; a range
    whose size is not a power of two (the right edge of a tree) is split as MTH splits it.
    """
    _check_range(start, end)
    n = end - start
    ceil = 1 << (n - 1).bit_length()
    if start % ceil:
        raise ValueError(f"[{start}, {end}) is not a subtree")
    return _subtree(start, end, node)


def _subtree(start: int, end: int, node: NodeReader) -> bytes:
    n = end - start
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return node(level, start >> level)
    k = _split(n)
    return node_hash(_subtree(start, start + k, node), _subtree(start + k, end, node))


def tree_root(size: int, node: NodeReader) -> bytes:
    """RFC 9162 2.1.1: the root of the tree of the first ``size`` leaves."""
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"bad tree size {size}")
    if size == 0:
        return EMPTY_ROOT
    return _subtree(0, size, node)


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 2.1.3.1 ``PATH(m, D_n)``: the audit path of leaf ``index`` in the tree of
    ``size`` leaves, from the leaf's sibling up to the root's child."""
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Walk down from the root; each step records the sibling subtree (highest first).
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(_subtree(start + k, end, node))
            end = start + k
        else:
            path.append(_subtree(start, start + k, node))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 2.1.4.1 ``PROOF(m, D_n)`` for ``0 < m < n``; empty when ``m == 0`` or
    ``m == n`` (the empty tree and a tree itself need no proof, tlog-witness)."""
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, end, m, b = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], b), unrolled; the hashes come out highest first.
    while True:
        n = end - start
        if m == n:
            if not b:
                proof.append(_subtree(start, end, node))
            break
        k = _split(n)
        if m <= k:
            proof.append(_subtree(start + k, end, node))
            end = start + k
        else:
            proof.append(_subtree(start, start + k, node))
            start, m, b = start + k, m - k, False
    proof.reverse()
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` in the tree of
    ``size`` leaves with root ``root``? ``False`` on any malformed input."""
    if not (_is_hash(leaf) and _is_hash(root)):
        return False
    if not (isinstance(index, int) and isinstance(size, int)):
        return False
    if not 0 <= index < size <= MAX_TREE_SIZE or len(proof) > MAX_PROOF_HASHES:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if not _is_hash(p) or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the tree of ``old_size`` leaves with root
    ``old_root`` is a prefix of the tree of ``new_size`` leaves with root ``new_root``?

    ``old_size == 0``: the proof must be empty and ``old_root`` the empty root (tlog-witness).
    ``old_size == new_size``: the proof must be empty and the roots equal. ``False`` on any
    malformed input.
    """
    if not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    if not (isinstance(old_size, int) and isinstance(new_size, int)):
        return False
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE or len(proof) > MAX_PROOF_HASHES:
        return False
    if not all(_is_hash(p) for p in proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class TreeBuilder:
    """The right edge of a growing tree (a compact range), for appending leaves one by one.

    ``edge`` holds the hashes of the complete subtrees that make up the first ``size``
    leaves, largest (leftmost) first: one per set bit of ``size``. Saving ``(size, edge)`` is
    enough to resume appending later.
    """

    __slots__ = ("edge", "size")

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ValueError(f"bad tree size {size}")
        if len(edge) != size.bit_count() or not all(_is_hash(h) for h in edge):
            raise ValueError("the edge does not match the size")
        self.size: int = size
        self.edge: list[bytes] = list(edge)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash; returns every node this completes as ``(level, k, hash)``,
        the leaf itself ``(0, index, leaf)`` first, then upwards."""
        if not _is_hash(leaf):
            raise ValueError("a leaf hash is 32 bytes")
        if self.size >= MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        index = self.size
        done = [(0, index, leaf)]
        h, level = leaf, 0
        while (index >> level) & 1:
            h = node_hash(self.edge.pop(), h)
            level += 1
            done.append((level, index >> level, h))
        self.edge.append(h)
        self.size = index + 1
        return done

    def root(self) -> bytes:
        """RFC 9162 2.1.1: the root of the tree of ``size`` leaves."""
        if not self.edge:
            return EMPTY_ROOT
        h = self.edge[-1]
        for left in reversed(self.edge[:-1]):
            h = node_hash(left, h)
        return h


class MemoryNodeReader:
    """A :data:`NodeReader` over leaf hashes held in memory: every complete node, level by
    level (about twice the leaves' memory). For tests, tools and offline verification."""

    __slots__ = ("levels",)

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not all(_is_hash(h) for h in leaf_hashes):
            raise ValueError("a leaf hash is 32 bytes")
        levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(levels[-1]) >= 2:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        self.levels = levels

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def __call__(self, level: int, k: int) -> bytes:
        if not (0 <= level < len(self.levels) and 0 <= k < len(self.levels[level])):
            raise KeyError((level, k))
        return self.levels[level][k]
