"""Merkle trees as RFC 9162 (Certificate Transparency 2.0) defines them, section 2.1.

Hashing is domain-separated: a leaf is ``SHA-256(0x00 || data)``, an interior node
``SHA-256(0x01 || left || right)``, and the tree over ``n`` leaves splits at the largest
power of two smaller than ``n`` (so a tree grows by appending, and every older tree is a
prefix of a newer one). The empty tree's hash is ``SHA-256("")``.

Three parts:

* hashing and verification (:func:`verify_inclusion`, :func:`verify_consistency`): what
  a verifier needs, with nothing but the root, the size and the proof;
* :class:`Frontier`: the compact range of a growing log (one hash per set bit of its
  size), which appends leaves and gives the root, and reports each *perfect* subtree it
  completes so a store can keep them;
* proof generation over stored perfect subtrees (:func:`inclusion_proof`,
  :func:`consistency_proof`, :func:`subtree_root`): a ``perfect(level, index)`` callback
  returns the hash of the aligned subtree over leaves ``[index << level, (index + 1) <<
  level)``; any subtree the proofs need combines ``O(log n)`` of them.

Test vectors: the Certificate Transparency reference tree (``tests/keys/test_merkle.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keys.errors import LogError

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "MerkleError",
    "Perfect",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_path",
    "root_of",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
Perfect = Callable[[int, int], bytes]
"""``perfect(level, index)``: the hash of the subtree over leaves
``[index << level, (index + 1) << level)`` (level 0: a leaf hash)."""


class MerkleError(LogError):
    """A proof does not verify, or is asked of sizes that do not exist."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The tree hash over ``leaf_hashes`` (RFC 9162 MTH), computed directly."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


# --- verification ----------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf *hash*) is at ``index`` in the tree of ``size`` leaves
    whose hash is ``root`` (RFC 9162 section 2.1.3.2); raise :class:`MerkleError` if not."""
    if root_from_path(leaf, index, size, path) != root:
        raise MerkleError("the inclusion path does not lead to the tree's root")


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion path leads to from ``leaf`` at ``index`` in a tree of
    ``size`` leaves (RFC 9162 section 2.1.3.2 without the final comparison); raise
    :class:`MerkleError` when the path has the wrong shape."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != HASH_SIZE:
            raise MerkleError("an inclusion path element is not a SHA-256 hash")
        if sn == 0:
            raise MerkleError("the inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("the inclusion path is shorter than the tree is deep")
    return r


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``first`` leaves (``first_root``) is a prefix of the tree of
    ``second`` leaves (``second_root``) (RFC 9162 section 2.1.4.2); raise if not."""
    if not 0 <= first <= second:
        raise MerkleError(f"cannot prove a tree of {first} leaves consistent with {second}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise MerkleError("a consistency proof element is not a SHA-256 hash")
    if first == second:
        if proof:
            raise MerkleError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise MerkleError("two tree heads of the same size have different roots")
        return
    if first == 0:
        if proof:
            raise MerkleError("a consistency proof from the empty tree must be empty")
        return
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is a node of the second
        path.insert(0, first_root)
    if not path:
        raise MerkleError("the consistency proof is empty")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("the consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise MerkleError("the consistency proof does not lead to the older tree's root")
    if sr != second_root:
        raise MerkleError("the consistency proof does not lead to the newer tree's root")


# --- a growing log ---------------------------------------------------------------------


@dataclass
class Frontier:
    """The compact range of a log of ``size`` leaves: the roots of its perfect subtrees,
    largest (leftmost) first, one per set bit of ``size``."""

    size: int = 0
    nodes: list[bytes] = field(default_factory=list)

    @staticmethod
    def keys(size: int) -> list[tuple[int, int]]:
        """The ``(level, index)`` of the perfect subtrees a log of ``size`` leaves keeps
        in its frontier, largest first."""
        out, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                out.append((level, start >> level))
                start += 1 << level
        return out

    @classmethod
    def load(cls, size: int, perfect: Perfect) -> Frontier:
        """Rebuild the frontier of a stored log from its perfect subtrees."""
        return cls(size, [perfect(level, index) for level, index in cls.keys(size)])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the perfect subtrees it completes, as
        ``(level, index, hash)``, the leaf itself first."""
        index = self.size
        made = [(0, index, leaf)]
        node, level = leaf, 0
        while index >> level & 1:  # a left sibling waits at this level: pair them
            node = node_hash(self.nodes.pop(), node)
            level += 1
            made.append((level, index >> level, node))
        self.nodes.append(node)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        r = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            r = node_hash(left, r)
        return r


def tree_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root of a whole tree of leaf hashes and every leaf's audit path (leaf to root,
    concatenated), built level by level: the tree RFC 9162 defines (a node without a
    right sibling rises unchanged), each node hashed once, for a batch signed at once."""
    if not leaves:
        return EMPTY_ROOT, []
    paths: list[list[bytes]] = [[] for _ in leaves]
    level = list(leaves)
    # members[j]: the leaves under node j of the current level
    members: list[range] = [range(i, i + 1) for i in range(len(leaves))]
    while len(level) > 1:
        up: list[bytes] = []
        up_members: list[range] = []
        for j in range(0, len(level) - 1, 2):
            left, right = level[j], level[j + 1]
            for i in members[j]:
                paths[i].append(right)
            for i in members[j + 1]:
                paths[i].append(left)
            up.append(node_hash(left, right))
            up_members.append(range(members[j].start, members[j + 1].stop))
        if len(level) % 2:
            up.append(level[-1])
            up_members.append(members[-1])
        level, members = up, up_members
    return level[0], [b"".join(p) for p in paths]


# --- proofs from stored perfect subtrees --------------------------------------------------


def subtree_root(start: int, end: int, perfect: Perfect) -> bytes:
    """MTH of leaves ``[start, end)``, for the ranges RFC 9162 trees are made of (``start``
    a multiple of the largest power of two not above ``end - start``)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return perfect(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_root(start, start + k, perfect), subtree_root(start + k, end, perfect))


def inclusion_proof(index: int, size: int, perfect: Perfect) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves, leaf to root."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_root(start + k, end, perfect))
            end = start + k
        else:
            path.append(subtree_root(start, start + k, perfect))
            start += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, perfect: Perfect) -> list[bytes]:
    """The proof that the tree of ``first`` leaves is a prefix of the one of ``second``."""
    if not 0 <= first <= second:
        raise MerkleError(f"cannot prove a tree of {first} leaves consistent with {second}")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, whole = 0, second, True
    m = first
    while True:
        if m == end - start:
            if not whole:
                proof.append(subtree_root(start, end, perfect))
            break
        k = _split(end - start)
        if m <= k:
            proof.append(subtree_root(start + k, end, perfect))
            end = start + k
        else:
            proof.append(subtree_root(start, start + k, perfect))
            m -= k
            start += k
            whole = False
    proof.reverse()
    return proof
