"""RFC 6962 / RFC 9162 Merkle tree over stored complete subtrees: roots, proofs and their verification.

Node (level, index) is the hash of leaves [index·2^level, (index+1)·2^level); only complete nodes exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


class ProofError(ValueError):
    """An inclusion or consistency proof does not prove what it claims."""


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """The complete subtree over leaves [index·2^level, (index+1)·2^level)."""

    level: int
    index: int

    def __post_init__(self) -> None:
        if self.level < 0 or self.index < 0:
            raise ValueError(f"node ({self.level}, {self.index}) has a negative level or index")

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the RFC 6962 hash of one log entry."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the RFC 6962 hash of two adjacent subtrees."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _require_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} is {len(value)} bytes, expected a {HASH_SIZE}-byte SHA-256 hash")


def _read(nodes: Mapping[NodeId, bytes], node: NodeId) -> bytes:
    try:
        return nodes[node]
    except KeyError:
        raise KeyError(f"node ({node.level}, {node.index}) is missing; fetch nodes_for(...) first") from None


def _split(n: int) -> int:
    """The largest power of two strictly below `n` (n >= 2): where RFC 6962 splits a list of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def completed_nodes(index: int, leaf: bytes, *, get: Callable[[NodeId], bytes]) -> list[tuple[NodeId, bytes]]:
    """Nodes that become complete once leaf hash `leaf` is appended at `index`, lowest level first.

    `get` returns earlier nodes; it is asked only for left siblings, at most one per level.
    """
    if index < 0:
        raise ValueError(f"leaf index must be >= 0, got {index}")
    _require_hash(leaf, "leaf hash")
    node, value = NodeId(0, index), leaf
    done = [(node, value)]
    while node.index % 2 == 1:
        value = node_hash(get(NodeId(node.level, node.index - 1)), value)
        node = NodeId(node.level + 1, node.index // 2)
        done.append((node, value))
    return done


def batch_reads(first_index: int, count: int) -> list[NodeId]:
    """Stored nodes that appending `count` leaves from `first_index` combines with, to fetch in one query."""
    if first_index < 0 or count < 0:
        raise ValueError(f"first index and count must be >= 0, got {first_index} and {count}")
    end = first_index + count
    # The nodes left of the batch are the tree's right edge; each is a left child whose sibling
    # completes once the tree reaches the end of that sibling.
    return [node for node in range_nodes(0, first_index) if (node.index + 2) << node.level <= end]


def batch_completed_nodes(
    first_index: int, leaves: Sequence[bytes], *, stored: Mapping[NodeId, bytes]
) -> list[tuple[NodeId, bytes]]:
    """Every node completed by appending leaf hashes `leaves` from `first_index`.

    `stored` must hold the nodes named by `batch_reads(first_index, len(leaves))`.
    """
    fresh: dict[NodeId, bytes] = {}

    def get(node: NodeId) -> bytes:
        return fresh[node] if node in fresh else _read(stored, node)

    done: list[tuple[NodeId, bytes]] = []
    for offset, leaf in enumerate(leaves):
        for node, value in completed_nodes(first_index + offset, leaf, get=get):
            fresh[node] = value
            done.append((node, value))
    return done


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The complete nodes whose hashes make up MTH(D[start:end]), left to right (empty for an empty range).

    Only ranges that RFC 6962 hashes as one subtree are accepted: those whose start is a multiple of
    the largest power of two <= their length (every range in a root or a proof is one).
    """
    if not 0 <= start <= end:
        raise ValueError(f"range [{start}, {end}) is not a range of leaf indexes")
    if start < end and start % (1 << ((end - start).bit_length() - 1)):
        raise ValueError(f"range [{start}, {end}) is not a subtree of an RFC 6962 tree")
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append(NodeId(level, start >> level))
        start += 1 << level
    return nodes


def range_hash(start: int, end: int, *, nodes: Mapping[NodeId, bytes]) -> bytes:
    """MTH(D[start:end]) from stored nodes: the range's nodes folded from the right, h(s1, h(s2, s3))."""
    if start >= end:
        raise ValueError(f"range [{start}, {end}) is empty; MTH of an empty list is only the empty root")
    hashes = [_read(nodes, node) for node in range_nodes(start, end)]
    value = hashes.pop()
    while hashes:
        value = node_hash(hashes.pop(), value)
    return value


def root(size: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """The root of the tree of the first `size` leaves; reads popcount(size) nodes."""
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")
    return range_hash(0, size, nodes=nodes) if size else EMPTY_ROOT


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[0:size]) (RFC 9162 2.1.3.1), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}; need 0 <= index < size")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((start, mid))
            start = mid
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(first, D[0:second]) (RFC 9162 2.1.4.1), in proof order."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}; need 0 < first <= second")
    ranges = []
    start, end, whole = 0, second, True  # SUBPROOF(first - start, D[start:end], whole)
    while first != end:
        mid = start + _split(end - start)
        if first <= mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((start, mid))
            start, whole = mid, False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[NodeId]:
    """Every stored node the hashes of `ranges` need, for one batched read."""
    return {node for start, end in ranges for node in range_nodes(start, end)}


def inclusion_proof(index: int, size: int, *, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves; `nodes` holds nodes_for."""
    return [range_hash(start, end, nodes=nodes) for start, end in inclusion_ranges(index, size)]


def consistency_proof(first: int, second: int, *, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """The RFC 9162 consistency proof from size `first` to size `second`; `nodes` holds nodes_for."""
    return [range_hash(start, end, nodes=nodes) for start, end in consistency_ranges(first, second)]


def _require_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(f"proof hash {position} is {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(*, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf `leaf_hash` at `index` in the tree `root` of `size` leaves.

    The proof binds `size` only through `root` (a proof for leaf 0 of 3 also passes as leaf 0 of 4
    against the 3-leaf root), so take both from the same signed checkpoint.

    RFC 9162 section 2.1.3.2, preceded by a length check of every hash:
      0. Every hash (leaf and proof) is HASH_SIZE bytes.
      1. If index >= size, fail.
      2. Set fn to index and sn to size - 1.
      3. Set r to the leaf hash.
      4. For each p in the proof: if sn is 0, fail. If LSB(fn) is set or fn == sn, set r to
         HASH(0x01 || p || r) and, if LSB(fn) is not set, right-shift fn and sn until LSB(fn) is set
         or fn is 0; otherwise set r to HASH(0x01 || r || p). Then right-shift fn and sn once.
      5. Succeed only if sn is 0 and r equals the root.
    """
    # Step 0.
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _require_proof_hashes(proof)
    # Step 1 (a negative index or size, possible only outside RFC 9162's unsigned fields, fails too).
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    # Step 2.
    fn, sn = index, size - 1
    # Step 3.
    r = leaf_hash
    # Step 4.
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long: {len(proof)} hashes for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not (fn & 1) and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # Step 5.
    if sn != 0:
        raise ProofError(f"inclusion proof is too short: {len(proof)} hashes for leaf {index} of {size}")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} of {size} leads to a different root")


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree `second_root` of `second` leaves extends `first_root`.

    As with inclusion, the sizes are bound only through the roots. RFC 9162 section 2.1.4.2 assumes
    0 < first < second; steps 0a-0c settle the other cases and 0d checks lengths:
      0a. If first is 0, fail: an empty tree has nothing to be consistent with, even at size 0.
      0b. If first > second, fail.
      0c. If first == second, succeed only if the proof is empty and the two roots are equal.
      0d. Every proof hash is HASH_SIZE bytes.
      1. If the proof is empty, fail.
      2. If first is an exact power of 2, prepend first_root to the proof.
      3. Set fn to first - 1 and sn to second - 1.
      4. If LSB(fn) is set, right-shift fn and sn equally until LSB(fn) is not set.
      5. Set both fr and sr to the first value of the proof.
      6. For each subsequent value c: if sn is 0, fail. If LSB(fn) is set or fn == sn, set fr to
         HASH(0x01 || c || fr) and sr to HASH(0x01 || c || sr) and, if LSB(fn) is not set,
         right-shift fn and sn until LSB(fn) is set or fn is 0; otherwise set sr to
         HASH(0x01 || sr || c). Then right-shift fn and sn once.
      7. Succeed only if fr equals first_root, sr equals second_root and sn is 0.
    """
    # Step 0a.
    if first <= 0:
        raise ProofError(f"no consistency proof from a tree of size {first}; the first size must be > 0")
    # Step 0b.
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    # Step 0c.
    if first == second:
        if proof:
            raise ProofError(f"consistency proof between equal sizes must be empty, got {len(proof)} hashes")
        if first_root != second_root:
            raise ProofError(f"two different roots for the same tree size {first}")
        return
    # Step 0d.
    _require_proof_hashes(proof)
    # Step 1.
    if not proof:
        raise ProofError(f"empty consistency proof from size {first} to size {second}")
    # Step 2.
    path = [first_root, *proof] if (first & (first - 1)) == 0 else list(proof)
    # Step 3.
    fn, sn = first - 1, second - 1
    # Step 4.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {first} to {second} is too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not (fn & 1) and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # Step 7.
    if sn != 0:
        raise ProofError(f"consistency proof from {first} to {second} is too short: {len(proof)} hashes")
    if fr != first_root:
        raise ProofError(f"consistency proof from {first} to {second} does not lead to the first root")
    if sr != second_root:
        raise ProofError(f"consistency proof from {first} to {second} does not lead to the second root")


class RootBuilder:
    """The root of a growing tree from its leaves alone, in O(log n) memory: for streaming verification.

    It keeps the hashes of the complete subtrees along the right edge, left to right.
    """

    def __init__(self) -> None:
        self._edge: list[tuple[int, bytes]] = []
        self.size = 0

    def push(self, leaf: bytes) -> None:
        level, value = 0, leaf
        while self._edge and self._edge[-1][0] == level:
            _, left = self._edge.pop()
            value = node_hash(left, value)
            level += 1
        self._edge.append((level, value))
        self.size += 1

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        value = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            value = node_hash(left, value)
        return value
