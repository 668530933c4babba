"""Merkle tree: stored-node roots and proofs against a naive RFC 6962 reference; the RFC 9162 verifiers."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from haldir.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeId,
    ProofError,
    RootBuilder,
    batch_completed_nodes,
    batch_reads,
    completed_nodes,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    nodes_for,
    range_hash,
    range_nodes,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "merkle"

# The entries of transparency-dev/merkle's test tree; every happy-path vector is a proof over its prefixes.
VECTOR_ENTRIES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]


# A naive reference, written from the definitions in RFC 6962 section 2.1 over lists of entries.


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n, for n > 1."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + d[0])
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[tuple[bytes, str]]:
    """PATH(m, D[n]), each hash tagged with the side of the path its subtree is on."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), (ref_mth(d[k:]), "right")]
    return [*ref_path(m - k, d[k:]), (ref_mth(d[:k]), "left")]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[tuple[bytes, str]]:
    """SUBPROOF(m, D[n], b), each hash tagged with the role it plays in verification."""
    n = len(d)
    if m == n:
        return [] if b else [(ref_mth(d), "old root")]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), (ref_mth(d[k:]), "right")]
    return [*ref_subproof(m - k, d[k:], False), (ref_mth(d[:k]), "left")]


def ref_inclusion(m: int, d: Sequence[bytes]) -> list[bytes]:
    return [value for value, _ in ref_path(m, d)]


def ref_consistency(m: int, d: Sequence[bytes]) -> list[bytes]:
    return [value for value, _ in ref_subproof(m, d, True)]


@functools.cache
def inclusion_shape(index: int, size: int) -> tuple[str, ...] | None:
    """What a verifier does with each hash of an inclusion proof; None when there is no such proof."""
    return tuple(side for _, side in ref_path(index, [b""] * size)) if 0 <= index < size else None


@functools.cache
def consistency_shape(first: int, second: int) -> tuple[str, ...] | None:
    if not 0 < first < second:
        return None
    return tuple(role for _, role in ref_subproof(first, [b""] * second, True))


# Helpers: a node store built one leaf at a time, and what one batched read of it returns.


def build_store(entries: Sequence[bytes]) -> dict[NodeId, bytes]:
    store: dict[NodeId, bytes] = {}
    for index, entry in enumerate(entries):
        store.update(completed_nodes(index, leaf_hash(entry), get=store.__getitem__))
    return store


def fetch(store: dict[NodeId, bytes], ranges: list[tuple[int, int]]) -> dict[NodeId, bytes]:
    return {node: store[node] for node in nodes_for(ranges)}


def distinct_entries(count: int, salt: bytes = b"") -> list[bytes]:
    """Entries that differ from one another, so no two subtrees of a test tree share a hash."""
    return [index.to_bytes(4, "big") + salt for index in range(count)]


def flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


# The shared vectors.


def _vector_files(kind: str) -> list[Path]:
    # A missing directory must fail the run, not shrink it to nothing: keep one id that cannot load.
    return sorted((VECTORS / kind).rglob("*.json")) or [VECTORS / kind / "missing.json"]


def _vector_id(path: Path) -> str:
    return path.relative_to(VECTORS).as_posix()


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(value) for value in case["proof"] or []]


def test_vector_directory_holds_a_happy_path_for_every_numbered_group() -> None:
    assert VECTORS.is_dir(), f"test vectors missing: expected them in {VECTORS}"
    for kind in ("inclusion", "consistency"):
        groups = [path for path in (VECTORS / kind).iterdir() if path.name.isdigit()]
        assert len(groups) >= 5
        assert all((group / "happy-path.json").is_file() for group in groups)


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_vector_id)
def test_inclusion_verifier_agrees_with_the_vector(path: Path) -> None:
    case = _load(path)

    def verify() -> None:
        verify_inclusion(
            leaf_hash=_b64(case["leafHash"]),
            index=case["leafIdx"],
            size=case["treeSize"],
            proof=_proof(case),
            root=_b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_vector_id)
def test_consistency_verifier_agrees_with_the_vector(path: Path) -> None:
    case = _load(path)

    def verify() -> None:
        verify_consistency(
            first=case["size1"],
            second=case["size2"],
            first_root=_b64(case["root1"]),
            second_root=_b64(case["root2"]),
            proof=_proof(case),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


def test_store_reproduces_every_happy_path_vector_byte_for_byte() -> None:
    store = build_store(VECTOR_ENTRIES)
    for path in sorted(VECTORS.glob("*/*/happy-path.json")):
        case = _load(path)
        if "size1" in case:
            first, second = case["size1"], case["size2"]
            assert root(first, store) == _b64(case["root1"]), path
            assert root(second, store) == _b64(case["root2"]), path
            assert consistency_proof(first, second, nodes=store) == _proof(case), path
        else:
            index, size = case["leafIdx"], case["treeSize"]
            assert leaf_hash(VECTOR_ENTRIES[index]) == _b64(case["leafHash"]), path
            assert root(size, store) == _b64(case["root"]), path
            assert inclusion_proof(index, size, nodes=store) == _proof(case), path


# Hashing and appending.


def test_hashes_use_the_rfc_6962_prefixes_and_the_empty_tree_hashes_the_empty_string() -> None:
    assert leaf_hash(b"x") == _sha256(b"\x00x")
    assert node_hash(b"l", b"r") == _sha256(b"\x01lr")
    assert EMPTY_ROOT == _sha256(b"") == root(0, {})
    assert len(EMPTY_ROOT) == HASH_SIZE


def test_appending_leaf_three_completes_its_leaf_node_and_both_parents() -> None:
    store = build_store(distinct_entries(3))
    asked: list[NodeId] = []

    def get(node: NodeId) -> bytes:
        asked.append(node)
        return store[node]

    done = completed_nodes(3, leaf_hash(b"d"), get=get)
    assert [node for node, _ in done] == [NodeId(0, 3), NodeId(1, 1), NodeId(2, 0)]
    assert asked == [NodeId(0, 2), NodeId(1, 0)]
    assert done[-1][1] == ref_mth([*distinct_entries(3), b"d"])


def test_appending_an_even_leaf_completes_only_its_leaf_node() -> None:
    assert completed_nodes(4, leaf_hash(b"e"), get=lambda node: pytest.fail(f"read {node}")) == [
        (NodeId(0, 4), leaf_hash(b"e"))
    ]


def test_completed_nodes_refuses_a_leaf_that_is_not_a_sha256_hash() -> None:
    with pytest.raises(ValueError, match="leaf hash is 5 bytes"):
        completed_nodes(0, b"entry", get=lambda node: b"")


# Long logs with repeated entries (equal subtrees) as well as short arbitrary ones.
entry_lists = st.lists(st.binary(max_size=3), max_size=40) | st.builds(
    lambda pattern, size: [pattern[index % len(pattern)] for index in range(size)],
    st.lists(st.binary(max_size=2), min_size=1, max_size=5),
    st.integers(0, 300),
)


@settings(max_examples=30, deadline=None)
@given(entry_lists)
def test_incrementally_stored_nodes_give_the_reference_root_for_every_prefix(entries: list[bytes]) -> None:
    store = build_store(entries)
    for size in range(len(entries) + 1):
        assert root(size, store) == ref_mth(entries[:size])


class _RecordingMapping(dict[NodeId, bytes]):
    def __init__(self, items: dict[NodeId, bytes]) -> None:
        super().__init__(items)
        self.read: set[NodeId] = set()

    def __getitem__(self, node: NodeId) -> bytes:
        self.read.add(node)
        return super().__getitem__(node)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 80))
def test_a_batch_reads_exactly_the_planned_nodes_and_completes_what_single_appends_would(
    first_index: int, count: int
) -> None:
    entries = distinct_entries(first_index + count)
    before = build_store(entries[:first_index])
    stored = _RecordingMapping({node: before[node] for node in batch_reads(first_index, count)})

    done = batch_completed_nodes(
        first_index, [leaf_hash(entry) for entry in entries[first_index:]], stored=stored
    )

    assert stored.read == set(stored)
    assert dict(done) == {node: value for node, value in build_store(entries).items() if node not in before}
    assert len(done) == len(dict(done))


def test_a_batch_without_its_planned_reads_names_the_missing_node() -> None:
    with pytest.raises(KeyError, match=r"node \(0, 2\) is missing"):
        batch_completed_nodes(3, [leaf_hash(b"d")], stored={NodeId(1, 0): b"\x00" * HASH_SIZE})


# Ranges and planning.


def test_range_nodes_take_the_largest_aligned_power_of_two_from_the_left() -> None:
    assert range_nodes(0, 13) == [NodeId(3, 0), NodeId(2, 2), NodeId(0, 12)]
    assert range_nodes(8, 11) == [NodeId(1, 4), NodeId(0, 10)]
    assert range_nodes(5, 5) == []


def test_range_hash_refuses_ranges_that_rfc_6962_does_not_hash_as_one_subtree() -> None:
    with pytest.raises(ValueError, match=r"\[1, 4\) is not a subtree"):
        range_hash(1, 4, nodes={})
    with pytest.raises(ValueError, match="empty"):
        range_hash(2, 2, nodes={})
    with pytest.raises(ValueError, match="not a range"):
        range_nodes(3, 2)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)])
def test_inclusion_ranges_refuse_a_leaf_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError, match=f"leaf index {index} is not in a tree of size {size}"):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("first", "second"), [(0, 0), (0, 4), (5, 4), (-1, 3)])
def test_consistency_ranges_refuse_an_empty_or_shrinking_tree(first: int, second: int) -> None:
    with pytest.raises(ValueError, match=f"from size {first} to size {second}"):
        consistency_ranges(first, second)


def test_root_refuses_a_negative_size() -> None:
    with pytest.raises(ValueError, match="tree size must be >= 0"):
        root(-1, {})


def test_consistency_between_equal_sizes_is_an_empty_proof() -> None:
    assert consistency_ranges(7, 7) == []


def test_every_inclusion_proof_up_to_64_leaves_equals_the_reference_reads_few_nodes_and_verifies() -> None:
    entries = distinct_entries(64)
    store = build_store(entries)  # holds nodes beyond every smaller size, as a live log does
    for size in range(1, 65):
        tree_root = root(size, store)
        assert tree_root == ref_mth(entries[:size])
        for index in range(size):
            ranges = inclusion_ranges(index, size)
            nodes = fetch(store, ranges)
            assert all(node.end <= size for node in nodes)
            assert len(nodes) <= 2 * size.bit_length()
            proof = inclusion_proof(index, size, nodes=nodes)
            assert proof == ref_inclusion(index, entries[:size])
            verify_inclusion(
                leaf_hash=leaf_hash(entries[index]), index=index, size=size, proof=proof, root=tree_root
            )


def test_every_consistency_proof_up_to_64_leaves_equals_the_reference_reads_few_nodes_and_verifies() -> None:
    entries = distinct_entries(64)
    store = build_store(entries)
    roots = {size: root(size, store) for size in range(65)}
    for second in range(1, 65):
        for first in range(1, second + 1):
            ranges = consistency_ranges(first, second)
            nodes = fetch(store, ranges)
            assert all(node.end <= second for node in nodes)
            assert len(nodes) <= 2 * second.bit_length()
            proof = consistency_proof(first, second, nodes=nodes)
            assert proof == ref_consistency(first, entries[:second])
            verify_consistency(
                first=first, second=second, first_root=roots[first], second_root=roots[second], proof=proof
            )


# Proofs from larger trees, and what every single mutation of them does.


@dataclass(frozen=True)
class InclusionClaim:
    leaf: bytes
    index: int
    size: int
    proof: tuple[bytes, ...]
    root: bytes
    other_roots: tuple[bytes, ...]  # roots of other sizes of the same log

    def verify(self) -> None:
        verify_inclusion(
            leaf_hash=self.leaf, index=self.index, size=self.size, proof=self.proof, root=self.root
        )


@dataclass(frozen=True)
class ConsistencyClaim:
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: tuple[bytes, ...]
    other_roots: tuple[bytes, ...]

    def verify(self) -> None:
        verify_consistency(
            first=self.first,
            second=self.second,
            first_root=self.first_root,
            second_root=self.second_root,
            proof=self.proof,
        )


Claim = TypeVar("Claim", InclusionClaim, ConsistencyClaim)
MAX_LEAVES = 600


@st.composite
def inclusion_claims(draw: st.DrawFn) -> InclusionClaim:
    size = draw(st.integers(1, MAX_LEAVES))
    index = draw(st.integers(0, size - 1))
    entries = distinct_entries(size + 4, salt=draw(st.binary(max_size=4)))
    store = build_store(entries)
    proof = inclusion_proof(index, size, nodes=fetch(store, inclusion_ranges(index, size)))
    assert proof == ref_inclusion(index, entries[:size])
    others = tuple(root(other, store) for other in {0, 1, size // 2, size - 1, size + 1, size + 4} - {size})
    return InclusionClaim(leaf_hash(entries[index]), index, size, tuple(proof), root(size, store), others)


@st.composite
def consistency_claims(draw: st.DrawFn) -> ConsistencyClaim:
    second = draw(st.integers(1, MAX_LEAVES))
    first = draw(st.integers(1, second))
    entries = distinct_entries(second + 4, salt=draw(st.binary(max_size=4)))
    store = build_store(entries)
    proof = consistency_proof(first, second, nodes=fetch(store, consistency_ranges(first, second)))
    assert proof == ref_consistency(first, entries[:second])
    sizes = {0, 1, first // 2, first - 1, first + 1, second - 1, second + 1, second + 4} - {first, second}
    others = tuple(root(other, store) for other in sizes)
    return ConsistencyClaim(first, second, root(first, store), root(second, store), tuple(proof), others)


def _with_proof(claim: Claim, proof: list[bytes]) -> Claim:
    return replace(claim, proof=tuple(proof))


def _flip_a_bit_in_one_proof_hash(data: st.DataObject, claim: Claim) -> Claim:
    assume(claim.proof)
    position = data.draw(st.integers(0, len(claim.proof) - 1))
    proof = list(claim.proof)
    proof[position] = flip(proof[position], data.draw(st.integers(0, HASH_SIZE * 8 - 1)))
    return _with_proof(claim, proof)


def _drop_one_proof_hash(data: st.DataObject, claim: Claim) -> Claim:
    assume(claim.proof)
    proof = list(claim.proof)
    del proof[data.draw(st.integers(0, len(proof) - 1))]
    return _with_proof(claim, proof)


def _add_one_proof_hash(data: st.DataObject, claim: Claim) -> Claim:
    proof = list(claim.proof)
    known = [*claim.proof, *claim.other_roots, b""]
    extra = data.draw(st.sampled_from(known) | st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE))
    proof.insert(data.draw(st.integers(0, len(proof))), extra)
    return _with_proof(claim, proof)


def _swap_two_proof_hashes(data: st.DataObject, claim: Claim) -> Claim:
    assume(len(claim.proof) >= 2)
    first = data.draw(st.integers(0, len(claim.proof) - 2))
    second = data.draw(st.integers(first + 1, len(claim.proof) - 1))
    proof = list(claim.proof)
    proof[first], proof[second] = proof[second], proof[first]
    return _with_proof(claim, proof)


PROOF_MUTATIONS: dict[str, Callable[[st.DataObject, Any], Any]] = {
    "flip a bit in one hash": _flip_a_bit_in_one_proof_hash,
    "drop one hash": _drop_one_proof_hash,
    "add one hash": _add_one_proof_hash,
    "swap two hashes": _swap_two_proof_hashes,
}


@pytest.mark.parametrize("mutation", PROOF_MUTATIONS.values(), ids=PROOF_MUTATIONS.keys())
@settings(max_examples=40, deadline=None)
@given(data=st.data(), claim=inclusion_claims())
def test_any_single_change_to_an_inclusion_proof_fails_verification(
    mutation: Callable[[st.DataObject, InclusionClaim], InclusionClaim],
    data: st.DataObject,
    claim: InclusionClaim,
) -> None:
    claim.verify()
    with pytest.raises(ProofError):
        mutation(data, claim).verify()


@pytest.mark.parametrize("mutation", PROOF_MUTATIONS.values(), ids=PROOF_MUTATIONS.keys())
@settings(max_examples=40, deadline=None)
@given(data=st.data(), claim=consistency_claims())
def test_any_single_change_to_a_consistency_proof_fails_verification(
    mutation: Callable[[st.DataObject, ConsistencyClaim], ConsistencyClaim],
    data: st.DataObject,
    claim: ConsistencyClaim,
) -> None:
    claim.verify()
    with pytest.raises(ProofError):
        mutation(data, claim).verify()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), claim=inclusion_claims())
def test_an_inclusion_proof_fails_for_a_wrong_leaf_index_or_root(
    data: st.DataObject, claim: InclusionClaim
) -> None:
    wrong_index = data.draw(st.integers(-1, claim.size + 2) | st.just(2**64 - 1))
    assume(wrong_index != claim.index)
    wrong_root = data.draw(
        st.sampled_from(claim.other_roots)
        | st.integers(0, HASH_SIZE * 8 - 1).map(lambda bit: flip(claim.root, bit))
    )
    wrong_leaf = flip(claim.leaf, data.draw(st.integers(0, HASH_SIZE * 8 - 1)))
    for mutated in (
        replace(claim, index=wrong_index),
        replace(claim, root=wrong_root),
        replace(claim, leaf=wrong_leaf),
    ):
        with pytest.raises(ProofError):
            mutated.verify()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), claim=inclusion_claims())
def test_an_inclusion_proof_fails_for_a_wrong_size_unless_that_size_has_the_same_proof_shape(
    data: st.DataObject, claim: InclusionClaim
) -> None:
    wrong_size = data.draw(st.integers(-1, 2 * claim.size + 2))
    assume(wrong_size != claim.size)
    mutated = replace(claim, size=wrong_size)
    if inclusion_shape(claim.index, wrong_size) == inclusion_shape(claim.index, claim.size):
        mutated.verify()  # the root, not the proof, pins the size: see the test below
    else:
        with pytest.raises(ProofError):
            mutated.verify()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), claim=consistency_claims())
def test_a_consistency_proof_fails_for_swapped_or_wrong_roots(
    data: st.DataObject, claim: ConsistencyClaim
) -> None:
    assume(claim.first < claim.second)
    bit = data.draw(st.integers(0, HASH_SIZE * 8 - 1))
    other = data.draw(st.sampled_from(claim.other_roots))
    for mutated in (
        replace(claim, first_root=claim.second_root, second_root=claim.first_root),
        replace(claim, first_root=flip(claim.first_root, bit)),
        replace(claim, second_root=flip(claim.second_root, bit)),
        replace(claim, first_root=other),
        replace(claim, second_root=other),
    ):
        with pytest.raises(ProofError):
            mutated.verify()


@settings(max_examples=80, deadline=None)
@given(data=st.data(), claim=consistency_claims())
def test_a_consistency_proof_fails_for_wrong_sizes_unless_they_have_the_same_proof_shape(
    data: st.DataObject, claim: ConsistencyClaim
) -> None:
    first = data.draw(st.just(claim.first) | st.integers(-1, 2 * claim.second + 2))
    second = data.draw(st.just(claim.second) | st.integers(-1, 2 * claim.second + 2))
    assume((first, second) != (claim.first, claim.second))
    mutated = replace(claim, first=first, second=second)
    if claim.first == claim.second:
        same_shape = 0 < first == second  # an empty proof and equal roots, whatever the size
    else:
        same_shape = consistency_shape(first, second) == consistency_shape(claim.first, claim.second)
    if same_shape:
        mutated.verify()
    else:
        with pytest.raises(ProofError):
            mutated.verify()


def test_up_to_24_leaves_an_inclusion_proof_passes_for_another_size_only_with_the_same_shape() -> None:
    entries = distinct_entries(48)
    store = build_store(entries)
    for size in range(1, 25):
        tree_root = root(size, store)
        for index in range(size):
            proof = inclusion_proof(index, size, nodes=store)
            for other in range(49):
                if other == size:
                    continue
                claim = {
                    "leaf_hash": leaf_hash(entries[index]),
                    "index": index,
                    "proof": proof,
                    "root": tree_root,
                }
                if inclusion_shape(index, other) == inclusion_shape(index, size):
                    verify_inclusion(size=other, **claim)
                else:
                    with pytest.raises(ProofError):
                        verify_inclusion(size=other, **claim)


def test_up_to_20_leaves_a_consistency_proof_passes_for_other_sizes_only_with_the_same_shape() -> None:
    store = build_store(distinct_entries(40))
    roots = {size: root(size, store) for size in range(41)}
    for second in range(2, 21):
        for first in range(1, second):
            claim = {
                "first_root": roots[first],
                "second_root": roots[second],
                "proof": consistency_proof(first, second, nodes=store),
            }
            expected = consistency_shape(first, second)
            for other_first, other_second in [
                *((f, second) for f in range(41)),
                *((first, s) for s in range(41)),
            ]:
                if (other_first, other_second) == (first, second):
                    continue
                if consistency_shape(other_first, other_second) == expected:
                    verify_consistency(first=other_first, second=other_second, **claim)
                else:
                    with pytest.raises(ProofError):
                        verify_consistency(first=other_first, second=other_second, **claim)


def test_proofs_bind_tree_sizes_only_through_their_roots() -> None:
    entries = distinct_entries(4)
    store = build_store(entries)
    three = root(3, store)
    # Leaf 0 of 3 has the same proof shape as leaf 0 of 4, so only the root tells the sizes apart.
    proof = inclusion_proof(0, 3, nodes=store)
    verify_inclusion(leaf_hash=leaf_hash(entries[0]), index=0, size=4, proof=proof, root=three)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash=leaf_hash(entries[0]), index=0, size=4, proof=proof, root=root(4, store))
    consistency = consistency_proof(1, 3, nodes=store)
    verify_consistency(first=1, second=4, first_root=root(1, store), second_root=three, proof=consistency)


# Verifier edge cases the RFC leaves to the caller.


def test_a_consistency_proof_from_size_zero_fails_even_to_size_zero() -> None:
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(first=0, second=0, first_root=EMPTY_ROOT, second_root=EMPTY_ROOT, proof=[])
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(first=0, second=1, first_root=EMPTY_ROOT, second_root=leaf_hash(b""), proof=[])


def test_equal_sizes_verify_only_with_an_empty_proof_and_equal_roots() -> None:
    tree_root = root(5, build_store(distinct_entries(5)))
    verify_consistency(first=5, second=5, first_root=tree_root, second_root=tree_root, proof=[])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(first=5, second=5, first_root=tree_root, second_root=tree_root, proof=[tree_root])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(first=5, second=5, first_root=tree_root, second_root=EMPTY_ROOT, proof=[])


def test_a_proof_hash_of_the_wrong_length_is_rejected_before_any_hashing() -> None:
    store = build_store(distinct_entries(4))
    proof = [*inclusion_proof(1, 4, nodes=store)]
    proof[1] = proof[1][:-1]
    with pytest.raises(ProofError, match="proof hash 1 is 31 bytes"):
        verify_inclusion(leaf_hash=store[NodeId(0, 1)], index=1, size=4, proof=proof, root=root(4, store))
    short = leaf_hash(b"x")[:-1]  # a one-leaf tree's root is its leaf hash, whatever its length
    with pytest.raises(ProofError, match="leaf hash is 31 bytes"):
        verify_inclusion(leaf_hash=short, index=0, size=1, proof=[], root=short)


@given(st.lists(st.binary(max_size=8), max_size=200))
def test_a_streaming_root_builder_agrees_with_the_reference_at_every_size(data: list[bytes]) -> None:
    builder = RootBuilder()
    assert builder.root() == EMPTY_ROOT
    for size in range(1, len(data) + 1):
        builder.push(leaf_hash(data[size - 1]))
        assert builder.size == size
        assert builder.root() == ref_mth(data[:size])
