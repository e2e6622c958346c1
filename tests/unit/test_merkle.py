"""RFC 9162 Merkle trees against published vectors, then against the RFC's own recursion.

Vectors from github.com/transparency-dev/merkle (Apache-2.0), the Go package behind
Trillian and the CT logs: rfc6962/rfc6962_test.go (hashes), proof/verify_test.go (the
8-leaf tree: roots, inclusion and consistency proofs, and its corruption probes) and
proof/proof_test.go (which tree nodes make up proofs in trees of up to 95 leaves).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.ledger import merkle
from daemon.ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# proof/verify_test.go: leaves, roots[size-1], inclusion (leaf is 1-based), consistency.
LEAVES = [
    h(x)
    for x in (
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
ROOTS = [
    h(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION = [
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
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
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
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")
TREE = MerkleTree([leaf_hash(x) for x in LEAVES])


def test_hashes_match_rfc6962_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree().root() == EMPTY_ROOT
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_vectors(size: int) -> None:
    assert TREE.root(size) == ROOTS[size - 1]
    assert merkle.root([leaf_hash(x) for x in LEAVES[:size]]) == ROOTS[size - 1]


def _corrupted_inclusions(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[int, int, bytes, list[bytes], bytes]]:
    """corruptInclusionProof of proof/verify_test.go: none of these may verify."""
    probes = [
        (index - 1, size, leaf, proof, root),
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root),
        (index, size, b"WrongLeaf", proof, root),
        (index, size, leaf, proof, EMPTY_ROOT),
        (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, b""], root),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [b"", *proof], root),
        (index, size, leaf, [root, *proof], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        probes.append((index, size, leaf, flipped, root))
    if proof:
        probes.append((index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        probes.append((index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_vectors(leaf: int, size: int, proof: list[str]) -> None:
    index, expected = leaf - 1, [h(x) for x in proof]
    leaf_h = leaf_hash(LEAVES[index])

    assert TREE.inclusion_proof(index, size) == expected
    assert root_from_inclusion_proof(index, size, leaf_h, expected) == ROOTS[size - 1]
    assert verify_inclusion(index, size, leaf_h, expected, ROOTS[size - 1])
    for probe in _corrupted_inclusions(index, size, expected, ROOTS[size - 1], leaf_h):
        assert not verify_inclusion(*probe), probe


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proofs_match_vectors(size1: int, size2: int, proof: list[str]) -> None:
    expected = [h(x) for x in proof]
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]

    assert TREE.consistency_proof(size1, size2) == expected
    assert verify_consistency(size1, size2, root1, root2, expected)
    if not expected:
        return
    # corruptConsistencyProof of proof/verify_test.go.
    probes = [
        (size1 - 1, size2, root1, root2, expected),
        (size1 + 1, size2, root1, root2, expected),
        (size1 ^ 2, size2, root1, root2, expected),
        (size1, size2 * 2, root1, root2, expected),
        (size1, size2 // 2, root1, root2, expected),
        (size1, size2, SOME_HASH, root2, expected),
        (size1, size2, root1, SOME_HASH, expected),
        (size1, size2, root2, root1, expected),
        (size1, size2, root1, root2, []),
        (size1, size2, root1, root2, [*expected, b""]),
        (size1, size2, root1, root2, [*expected, root1]),
        (size1, size2, root1, root2, [*expected, root2]),
        (size1, size2, root1, root2, [b"", *expected]),
        (size1, size2, root1, root2, [root1, *expected]),
        (size1, size2, root1, root2, [root2, *expected]),
        (size1, size2, root1, root2, [expected[0], *expected]),
        (size1, size2, root1, root2, expected[:-1]),
    ]
    for i in range(len(expected)):
        flipped = list(expected)
        flipped[i] = bytes([expected[i][0] ^ 16]) + expected[i][1:]
        probes.append((size1, size2, root1, root2, flipped))
    for probe in probes:
        assert not verify_consistency(*probe), probe


def test_consistency_edge_cases_of_verify_test_go() -> None:
    root1, root2 = leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2")
    assert not verify_consistency(0, 0, root1, root2, [])
    assert not verify_consistency(1, 1, root1, root2, [])
    assert verify_consistency(0, 0, root1, root1, [])
    assert verify_consistency(0, 1, root1, root2, [])
    assert verify_consistency(1, 1, root2, root2, [])
    assert not verify_consistency(1, 0, root1, root2, [])
    assert not verify_consistency(2, 1, root1, root2, [])
    assert not verify_consistency(1, 2, root1, root2, [])
    for size1, size2 in ((0, 0), (0, 1), (1, 1)):
        assert not verify_consistency(size1, size2, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_inclusion_edge_cases_of_verify_test_go() -> None:
    single = leaf_hash(b"data")
    assert verify_inclusion(0, 1, single, [], single)
    assert not verify_inclusion(0, 1, b"", [], single)
    assert not verify_inclusion(0, 1, single, [], b"")
    for index, size in ((0, 0), (1, 0), (2, 1)):
        assert not verify_inclusion(index, size, SOME_HASH, [], EMPTY_ROOT)


# proof/proof_test.go: the nodes (level, index) a proof is made of; a tuple of nodes
# is one proof element hashed together from them ("rehash": a node that is missing
# from a tree whose size is not a power of two).
Node = tuple[int, int]
Element = Node | tuple[Node, ...]
INCLUSION_NODES: list[tuple[int, int, list[Element]]] = [
    (1, 0, []),
    (2, 0, [(0, 1)]),
    (2, 1, [(0, 0)]),
    (3, 1, [(0, 0), (0, 2)]),
    (7, 0, [(0, 1), (1, 1), ((0, 6), (1, 2))]),
    (7, 1, [(0, 0), (1, 1), ((0, 6), (1, 2))]),
    (7, 2, [(0, 3), (1, 0), ((0, 6), (1, 2))]),
    (7, 3, [(0, 2), (1, 0), ((0, 6), (1, 2))]),
    (7, 4, [(0, 5), (0, 6), (2, 0)]),
    (7, 5, [(0, 4), (0, 6), (2, 0)]),
    (7, 6, [(1, 2), (2, 0)]),
    (4, 2, [(0, 3), (1, 0)]),
    (5, 3, [(0, 2), (1, 0), (0, 4)]),
    (6, 3, [(0, 2), (1, 0), (1, 2)]),
    (6, 4, [(0, 5), (2, 0)]),
    (15, 10, [(0, 11), (1, 4), ((0, 14), (1, 6)), (3, 0)]),
    (31, 24, [(0, 25), (1, 13), ((0, 30), (1, 14)), (3, 2), (4, 0)]),
    (95, 81, [(0, 80), (1, 41), (2, 21), ((0, 94), (1, 46), (2, 22)), (4, 4), (6, 0)]),
]
CONSISTENCY_NODES: list[tuple[int, int, list[Element]]] = [
    (1, 2, [(0, 1)]),
    (1, 4, [(0, 1), (1, 1)]),
    (1, 6, [(0, 1), (1, 1), (1, 2)]),
    (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]),
    (3, 7, [(0, 2), (0, 3), (1, 0), ((0, 6), (1, 2))]),
    (4, 7, [((0, 6), (1, 2))]),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    (2, 4, [(1, 1)]),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]),
    (1, 7, [(0, 1), (1, 1), ((0, 6), (1, 2))]),
    (10, 15, [(1, 4), (1, 5), ((0, 14), (1, 6)), (3, 0)]),
    (24, 31, [(3, 2), ((0, 30), (1, 14), (2, 6)), (4, 0)]),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), ((0, 94), (1, 46), (2, 22)), (4, 4), (6, 0)]),
    *((n, n, []) for n in (1, 2, 3, 4, 5, 7, 8)),
]

SYNTHETIC = [leaf_hash(i.to_bytes(4, "big")) for i in range(100)]


def mth(leaves: Sequence[bytes]) -> bytes:
    """MTH exactly as RFC 9162 §2.1.1 defines it, recursively (the reference)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def expected_element(element: Element, size: int) -> bytes:
    """MTH over the leaves the element's nodes span, in a tree of `size` leaves."""
    nodes = element if isinstance(element[0], tuple) else (element,)
    start = min(index << level for level, index in nodes)
    end = min(size, max((index + 1) << level for level, index in nodes))
    return mth(SYNTHETIC[start:end])


@pytest.mark.parametrize(("size", "index", "nodes"), INCLUSION_NODES)
def test_inclusion_proofs_are_made_of_the_published_nodes(
    size: int, index: int, nodes: list[Element]
) -> None:
    tree = MerkleTree(SYNTHETIC)
    assert tree.inclusion_proof(index, size) == [expected_element(n, size) for n in nodes]


@pytest.mark.parametrize(("size1", "size2", "nodes"), CONSISTENCY_NODES)
def test_consistency_proofs_are_made_of_the_published_nodes(
    size1: int, size2: int, nodes: list[Element]
) -> None:
    tree = MerkleTree(SYNTHETIC)
    assert tree.consistency_proof(size1, size2) == [expected_element(n, size2) for n in nodes]


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (8, 7), (0, 101)])
def test_no_inclusion_proof_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        MerkleTree(SYNTHETIC).inclusion_proof(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(5, 0), (9, 8), (1, 101), (-1, 3)])
def test_no_consistency_proof_backwards_or_beyond(size1: int, size2: int) -> None:
    with pytest.raises(ProofError):
        MerkleTree(SYNTHETIC).consistency_proof(size1, size2)


def test_leaf_hashes_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        MerkleTree([b"short"])


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 100), st.data())
def test_any_inclusion_proof_verifies_and_a_flipped_bit_fails(
    size: int, data: st.DataObject
) -> None:
    tree = MerkleTree(SYNTHETIC[:size])
    index = data.draw(st.integers(0, size - 1))
    root = tree.root()
    assert root == mth(SYNTHETIC[:size])
    proof = tree.inclusion_proof(index)
    assert verify_inclusion(index, size, SYNTHETIC[index], proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        flipped = list(proof)
        flipped[i] = bytes(
            b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(proof[i])
        )
        assert not verify_inclusion(index, size, SYNTHETIC[index], flipped, root)
    bit = data.draw(st.integers(0, 255))
    bad_leaf = bytearray(SYNTHETIC[index])
    bad_leaf[bit // 8] ^= 1 << (bit % 8)
    assert not verify_inclusion(index, size, bytes(bad_leaf), proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 100), st.data())
def test_any_consistency_proof_verifies_and_a_flipped_bit_fails(
    size2: int, data: st.DataObject
) -> None:
    size1 = data.draw(st.integers(1, size2))
    tree = MerkleTree(SYNTHETIC[:size2])
    root1, root2 = tree.root(size1), tree.root()
    proof = tree.consistency_proof(size1)
    assert verify_consistency(size1, size2, root1, root2, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        flipped = list(proof)
        changed = bytearray(proof[i])
        changed[bit // 8] ^= 1 << (bit % 8)
        flipped[i] = bytes(changed)
        assert not verify_consistency(size1, size2, root1, root2, flipped)
    if size1 < size2:
        assert not verify_consistency(size1, size2, root1, SYNTHETIC[0], proof)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 20), max_size=8))
def test_appending_in_any_batches_builds_the_same_tree(batches: list[int]) -> None:
    tree, done = MerkleTree(), 0
    for n in batches:
        tree.extend(SYNTHETIC[done : done + n])
        done = min(done + n, len(SYNTHETIC))
        assert tree.root() == mth(SYNTHETIC[:done])
    assert [tree.leaf(i) for i in range(len(tree))] == SYNTHETIC[:done]


def test_a_million_leaves_take_seconds_not_minutes() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 20)]
    started = time.perf_counter()
    tree = MerkleTree(leaves)
    tree.append(leaf_hash(b"one more"))
    size = len(tree)
    for index in (0, 1, 524_287, 999_999, size - 1):
        assert verify_inclusion(
            index, size, tree.leaf(index), tree.inclusion_proof(index), tree.root()
        )
    for old in (1, 3, 1 << 19, size - 1):
        assert verify_consistency(
            old, size, tree.root(old), tree.root(), tree.consistency_proof(old)
        )
    assert time.perf_counter() - started < 10


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), st.data())
def test_root_with_replaced_leaves_is_the_root_of_the_changed_tree(
    size: int, data: st.DataObject
) -> None:
    tree = MerkleTree(SYNTHETIC[:size])
    replaced = data.draw(
        st.dictionaries(st.integers(0, size - 1), st.binary(min_size=32, max_size=32), max_size=5)
    )
    changed = [replaced.get(i, leaf) for i, leaf in enumerate(SYNTHETIC[:size])]
    assert tree.root_with(replaced) == mth(changed)
    smaller = data.draw(st.integers(0, size))
    assert tree.root_with(replaced, smaller) == mth(changed[:smaller])
