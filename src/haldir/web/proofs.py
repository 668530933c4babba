"""The audit page's check of one entry: proven included in the log's latest signed checkpoint, verified
here as any offline verifier would, from the signed note, the log's public key and the core verifiers."""

from __future__ import annotations

from dataclasses import dataclass

from haldir.core import merkle
from haldir.core.checkpoints import CheckpointError, Verifier, parse_checkpoint
from haldir.core.keys import Principal
from haldir.core.ledger import StoredEntry, hash_leaf, to_hex
from haldir.governor import Governor


@dataclass(frozen=True)
class InclusionCheck:
    ok: bool
    tree_size: int | None
    root_hash: str | None
    proof: list[str]
    reason: str | None = None


async def check_inclusion(gov: Governor, principal: Principal, entry: StoredEntry) -> InclusionCheck:
    """Whether `entry` is in the tree of the latest signed checkpoint; never raises for a failed proof.

    1. Take the latest checkpoint (the server signs one over the committed log when it has grown).
    2. Verify its signature under the log's public key and its origin: only then are its size and root
       trusted.
    3. Recompute the entry's leaf hash from its record (RFC 8785 canonical JSON), not the stored hash.
    4. Fetch the inclusion proof of the entry's leaf index in the tree of the checkpoint's size.
    5. Verify that the proof leads from that leaf to the checkpoint's root (RFC 9162 section 2.1.3.2).
    """
    # Step 1.
    signed = await gov.ledger.checkpoint(principal)
    key = gov.ledger.log_key(principal)
    try:
        # Step 2.
        checkpoint = parse_checkpoint(signed.note, Verifier.from_vkey(key.vkey), origin=key.origin)
    except CheckpointError as exc:
        return InclusionCheck(False, None, None, [], f"the checkpoint does not verify: {exc.reason}")
    # Step 3.
    leaf = hash_leaf(entry.record)
    # Step 4.
    proof = await gov.ledger.inclusion_proof(principal, entry.entry_id, tree_size=checkpoint.tree_size)
    hashes = [to_hex(node) for node in proof.proof]
    try:
        # Step 5.
        merkle.verify_inclusion(
            leaf_hash=leaf,
            index=entry.leaf_index,
            size=checkpoint.tree_size,
            proof=proof.proof,
            root=checkpoint.root_hash,
        )
    except merkle.ProofError as exc:
        return InclusionCheck(False, checkpoint.tree_size, to_hex(checkpoint.root_hash), hashes, str(exc))
    return InclusionCheck(True, checkpoint.tree_size, to_hex(checkpoint.root_hash), hashes)
