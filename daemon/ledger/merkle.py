"""Merkle trees of RFC 9162 §2.1 (Certificate Transparency v2): hashes, proofs, checks.

    leaf hash   SHA-256(0x00 || data)
    node hash   SHA-256(0x01 || left || right)
    MTH(D[n])   split at the largest power of two smaller than n

Everything works on leaf *hashes* (32 bytes each) and holds no database or I/O.
`MerkleTree` keeps the hash of every full subtree (about 2n hashes, 64 MB for a
million leaves), so a root or proof for any size up to n costs O(log² n) hashes,
and appending a leaf costs two hashes amortised. The verifiers are the algorithms
of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), verbatim in spirit.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping, Sequence

HASH_SIZE = 32
# MTH({}) = SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_NODE_PREFIX = hashlib.sha256(b"\x01")


class ProofError(ValueError):
    """Arguments that no proof can exist for (an index beyond the tree, sizes reversed)."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf's data: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    digest = _NODE_PREFIX.copy()
    digest.update(left)
    digest.update(right)
    return digest.digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only Merkle tree over leaf hashes, with every full subtree hash kept.

    Level k holds the hashes of the aligned subtrees of 2**k leaves, packed into one
    bytearray. Roots and proofs may be asked for any earlier size (a past checkpoint),
    as the full subtrees of a smaller tree are full subtrees of the bigger one.
    Not thread-safe: share it behind a lock.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self.extend(leaf_hashes)

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"no leaf {index} in a tree of {len(self)}")
        return self._node(0, index)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash at the end."""
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add leaf hashes at the end; hashes each new full subtree once, level by level."""
        hashes = list(leaf_hashes)
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        if not hashes:
            return
        self._levels[0] += b"".join(hashes)
        level = 0
        while True:
            below = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append(bytearray())
            above = self._levels[level + 1]
            have, want = len(above) // HASH_SIZE, len(below) // (2 * HASH_SIZE)
            if have == want:  # nothing new up here, so nothing new higher up either
                return
            with memoryview(below) as view:
                above += b"".join(
                    [
                        _node_of_pair(view[2 * HASH_SIZE * i : 2 * HASH_SIZE * (i + 1)])
                        for i in range(have, want)
                    ]
                )
            level += 1

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all); EMPTY_ROOT for size 0."""
        size = self._checked_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def root_with(self, replaced: Mapping[int, bytes], size: int | None = None) -> bytes:
        """The root the first `size` leaves would have with some leaf hashes replaced
        ({index: leaf hash}); costs O(k log² n) for k replacements, the tree unchanged."""
        size = self._checked_size(size)
        changed = sorted(i for i in replaced if 0 <= i < size)
        if any(len(replaced[i]) != HASH_SIZE for i in changed):
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")

        def mth(start: int, end: int, lo: int, hi: int) -> bytes:
            if lo == hi:  # nothing replaced in here
                return self._subtree(start, end)
            if end - start == 1:
                return replaced[start]
            k = _split(end - start)
            mid = bisect.bisect_left(changed, start + k, lo, hi)
            return node_hash(mth(start, start + k, lo, mid), mth(start + k, end, mid, hi))

        return EMPTY_ROOT if size == 0 else mth(0, size, 0, len(changed))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1: sibling hashes, leaf upwards."""
        size = self._checked_size(size)
        if not 0 <= index < size:
            raise ProofError(f"leaf {index} is not in a tree of size {size}")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index - start < k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when the sizes match
        or old_size is 0)."""
        new_size = self._checked_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
        if old_size == 0:
            return []
        proof: list[bytes] = []
        start, end, m, complete = 0, new_size, old_size, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self._subtree(start, end))
        proof.reverse()
        return proof

    def _checked_size(self, size: int | None) -> int:
        if size is None:
            return len(self)
        if not 0 <= size <= len(self):
            raise ProofError(f"size {size} is beyond the tree's {len(self)} leaves")
        return size

    def _node(self, level: int, index: int) -> bytes:
        offset = index * HASH_SIZE
        return bytes(self._levels[level][offset : offset + HASH_SIZE])

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range of the RFC's recursion (start aligned to it):
        its full subtrees, largest first, folded from the right."""
        pieces: list[bytes] = []
        while start < end:
            n = end - start
            k = n if n & (n - 1) == 0 else _split(n)
            level = k.bit_length() - 1
            pieces.append(self._node(level, start >> level))
            start += k
        result = pieces.pop()
        while pieces:
            result = node_hash(pieces.pop(), result)
        return result


def _node_of_pair(pair: memoryview) -> bytes:
    digest = _NODE_PREFIX.copy()
    digest.update(pair)
    return digest.digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the leaf hashes."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of all `leaf_hashes`."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The consistency proof from the first `old_size` leaves to all of them."""
    return MerkleTree(leaf_hashes).consistency_proof(old_size)


def _all_hashes(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """The root that `proof` leads to from `leaf` at `index` (RFC 9162 §2.1.3.2),
    or None when the proof cannot be one for that index and size."""
    if not 0 <= index < size or not _all_hashes(leaf, *proof):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows the leaf hash at `index` in the tree of `size` with `root`."""
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    return computed is not None and _all_hashes(root) and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (new_size, new_root) extends (old_size, old_root)
    (RFC 9162 §2.1.4.2). Equal sizes need equal roots and an empty proof; an empty old
    tree is consistent with everything, with an empty proof."""
    if not 0 <= old_size <= new_size or not _all_hashes(old_root, new_root, *proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
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
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
