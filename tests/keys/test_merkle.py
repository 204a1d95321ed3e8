"""RFC 9162 Merkle trees: the Certificate Transparency reference vectors, proofs that
round-trip for every shape of tree, and any change to a proof refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The reference tree of certificate-transparency (and RFC 6962 implementations since).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


class Stored:
    """A log kept as its perfect subtrees, the way the relay's stores keep it."""

    def __init__(self, leaves: list[bytes] | None = None) -> None:
        self.frontier = Frontier()
        self.nodes: dict[tuple[int, int], bytes] = {}
        for leaf in leaves or []:
            self.add(leaf)

    def add(self, data: bytes) -> None:
        for level, index, h in self.frontier.append(leaf_hash(data)):
            self.nodes[(level, index)] = h

    def perfect(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


CT = Stored(CT_LEAVES)


def hx(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_roots_match_the_reference_tree() -> None:
    assert root_of([]) == EMPTY_ROOT
    grown = Stored()
    assert grown.frontier.root().hex() == CT_ROOTS[0]
    for size in range(1, 9):
        hashes = [leaf_hash(d) for d in CT_LEAVES[:size]]
        assert root_of(hashes).hex() == CT_ROOTS[size]
        grown.add(CT_LEAVES[size - 1])
        assert grown.frontier.root().hex() == CT_ROOTS[size]
        assert Frontier.load(size, CT.perfect) == grown.frontier


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_proofs_match_the_reference(index: int, size: int, path: list[str]) -> None:
    assert inclusion_proof(index, size, CT.perfect) == hx(path)
    root = bytes.fromhex(CT_ROOTS[size])
    verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, hx(path), root)


@pytest.mark.parametrize(("first", "second", "proof"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_reference(first: int, second: int, proof: list[str]) -> None:
    assert consistency_proof(first, second, CT.perfect) == hx(proof)
    r1, r2 = bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second])
    verify_consistency(first, second, r1, r2, hx(proof))


MANY = Stored([i.to_bytes(2, "big") for i in range(70)])
ROOTS = [Frontier.load(n, MANY.perfect).root() for n in range(71)]


def test_every_proof_of_every_tree_shape_verifies() -> None:
    for size in range(1, 71):
        assert ROOTS[size] == root_of([MANY.perfect(0, i) for i in range(size)])
        for index in range(size):
            path = inclusion_proof(index, size, MANY.perfect)
            verify_inclusion(MANY.perfect(0, index), index, size, path, ROOTS[size])
        for first in range(size + 1):
            proof = consistency_proof(first, size, MANY.perfect)
            verify_consistency(first, size, ROOTS[first], ROOTS[size], proof)


@given(st.data())
def test_any_change_to_an_inclusion_proof_is_refused(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 70))
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_proof(index, size, MANY.perfect)
    leaf, root = MANY.perfect(0, index), ROOTS[size]
    what = data.draw(st.sampled_from(["path", "leaf", "root", "index", "size", "drop", "add"]))
    if what == "path":
        i = data.draw(st.integers(0, len(path) - 1))
        byte = data.draw(st.integers(0, 31))
        path[i] = path[i][:byte] + bytes([path[i][byte] ^ 1]) + path[i][byte + 1 :]
    elif what == "leaf":
        leaf = MANY.perfect(0, (index + 1) % size)
    elif what == "root":
        root = ROOTS[size - 1]
    elif what == "index":
        index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        # Swapping two leaves that happen to be siblings cannot verify either: the leaf differs.
    elif what == "size":  # a head of another size (its root comes with it)
        size = data.draw(st.integers(1, 70).filter(lambda n: n != size))
        root = ROOTS[size]
    elif what == "drop":
        path = path[:-1]
    else:
        path = [*path, ROOTS[1]]
    with pytest.raises(MerkleError):
        verify_inclusion(leaf, index, size, path, root)


@given(st.data())
def test_any_change_to_a_consistency_proof_is_refused(data: st.DataObject) -> None:
    second = data.draw(st.integers(2, 70))
    first = data.draw(st.integers(1, second - 1))
    proof = consistency_proof(first, second, MANY.perfect)
    r1, r2 = ROOTS[first], ROOTS[second]
    what = data.draw(st.sampled_from(["proof", "first_root", "second_root", "forked", "drop"]))
    if what == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof[i] = bytes([proof[i][0] ^ 0x80]) + proof[i][1:]
    elif what == "first_root":
        r1 = ROOTS[first - 1] if first > 1 else ROOTS[2]
    elif what == "second_root":
        r2 = ROOTS[second - 1]
    elif what == "forked":  # history rewritten: another leaf at some index below first
        changed = data.draw(st.integers(0, first - 1))
        forked = Stored(
            [b"rewritten" if i == changed else i.to_bytes(2, "big") for i in range(second)]
        )
        r2 = forked.frontier.root()
        proof = consistency_proof(first, second, forked.perfect)
    else:
        proof = proof[:-1]
    with pytest.raises(MerkleError):
        verify_consistency(first, second, r1, r2, proof)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(MerkleError):
        inclusion_proof(8, 8, CT.perfect)
    with pytest.raises(MerkleError):
        consistency_proof(5, 4, CT.perfect)
    with pytest.raises(MerkleError):
        verify_inclusion(leaf_hash(b""), 0, 0, [], EMPTY_ROOT)
    with pytest.raises(MerkleError):
        verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    with pytest.raises(MerkleError):
        verify_inclusion(leaf_hash(b""), 0, 2, [b"short"], ROOTS[2])


def test_tree_paths_gives_rfc9162s_root_and_every_audit_path() -> None:
    from keys.merkle import tree_paths

    assert tree_paths([]) == (root_of([]), [])
    for size in range(1, 70):
        leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
        nodes: dict[tuple[int, int], bytes] = {}
        frontier = Frontier()
        for leaf in leaves:
            for level, index, h in frontier.append(leaf):
                nodes[(level, index)] = h
        root, paths = tree_paths(leaves)
        assert root == root_of(leaves) == frontier.root()
        for i in range(size):
            want = inclusion_proof(i, size, lambda level, index, n=nodes: n[(level, index)])
            assert paths[i] == b"".join(want), (size, i)
