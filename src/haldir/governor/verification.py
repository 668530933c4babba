"""Re-verify a tenant's whole log from the store (every record, leaf, link, index column and root), and
sum its spend: the ledger service's whole-log reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from haldir.core import merkle
from haldir.core.checkpoints import CheckpointError, Verifier, parse_checkpoint
from haldir.core.ledger import (
    GENESIS,
    ChainError,
    EntryFilter,
    StoredEntry,
    canonical_bytes,
    indexed_fields,
    verify_entry,
)
from haldir.core.money import from_micros
from haldir.errors import InvalidRequest
from haldir.store.ports import LedgerStore


@dataclass(frozen=True)
class BadEntry:
    entry_id: str | None
    leaf_index: int | None
    reason: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    tree_size: int
    first_bad: BadEntry | None = None


@dataclass(frozen=True)
class Spend:
    total: Decimal
    count: int
    by_session: dict[str, Decimal]
    by_agent: dict[str, Decimal]
    by_tool: dict[str, Decimal]


async def verify_log(
    store: LedgerStore, tenant_id: str, *, verifier: Callable[[], Verifier], origin: str
) -> Verification:
    """Stream through the tenant's log and report the first entry that fails, if any. `verifier` gives
    the log key (asked for only when there is a checkpoint to check), `origin` the tenant's log origin.

    Steps, for each entry in leaf order:
      1. its leaf index is the next one (no gap, no reordering);
      2. its stored record is canonical JSON of a record of this tenant, under its own entry id;
      3. the record hashes to the stored leaf hash, and the entry links to the one before;
      4. the index columns beside the record still say what the record says.
    Then, for the log as a whole:
      5. the head row's size equals the number of entries;
      6. the root computed from the leaves equals the root of the stored Merkle nodes;
      7. the latest checkpoint verifies under the log key and its root is the root of that many leaves.
    """
    latest = await store.latest_checkpoint(tenant_id)
    builder = merkle.RootBuilder()
    checkpoint_root: bytes | None = None
    prev, last = GENESIS, None
    async for entry in store.scan(tenant_id):
        problem = _check_entry(entry, tenant_id=tenant_id, expected_index=builder.size, expected_prev=prev)
        if problem is not None:
            return Verification(False, builder.size, problem)
        builder.push(entry.leaf_hash)
        if latest is not None and builder.size == latest.tree_size:
            checkpoint_root = builder.root()
        prev, last = entry.entry_hash, entry
    size = builder.size
    # Step 5: the head.
    if await store.size(tenant_id) != size:
        return Verification(
            False, size, BadEntry(None, size, "the log head's size does not match its entries")
        )
    # Step 6: the stored Merkle nodes.
    wanted = set(merkle.range_nodes(0, size))
    nodes = await store.nodes(tenant_id, wanted)
    if size and (len(nodes) != len(wanted) or merkle.root(size, nodes) != builder.root()):
        where = last.entry_id if last else None
        return Verification(
            False,
            size,
            BadEntry(where, size - 1, "the stored Merkle nodes do not match the entries' leaves"),
        )
    # Step 7: the latest checkpoint.
    if latest is not None:
        reason = _checkpoint_problem(
            latest.note, latest.tree_size, checkpoint_root, size, verifier=verifier, origin=origin
        )
        if reason is not None:
            return Verification(
                False, size, BadEntry(None, latest.tree_size - 1 if latest.tree_size else None, reason)
            )
    return Verification(True, size)


def _checkpoint_problem(
    note: str,
    tree_size: int,
    computed_root: bytes | None,
    size: int,
    *,
    verifier: Callable[[], Verifier],
    origin: str,
) -> str | None:
    if tree_size > size:
        return f"checkpoint covers {tree_size} entries, the log only {size}: entries were removed"
    try:
        signed = parse_checkpoint(note, verifier(), origin=origin)
    except CheckpointError as exc:
        return f"the latest checkpoint does not verify: {exc.reason}"
    expected = computed_root if tree_size else merkle.EMPTY_ROOT
    if signed.tree_size != tree_size or signed.root_hash != expected:
        return f"the entries' root at size {tree_size} differs from the signed checkpoint's"
    return None


async def spend(
    store: LedgerStore,
    tenant_id: str,
    *,
    session_id: str | None,
    agent_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Spend:
    """The tenant's charged spend, in total and by session, agent and tool, over the filtered entries."""
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("since must be before until")
    groups = await store.spend(
        tenant_id, where=EntryFilter(session_id=session_id, agent_id=agent_id, since=since, until=until)
    )
    by_session: dict[str, int] = {}
    by_agent: dict[str, int] = {}
    by_tool: dict[str, int] = {}
    total = count = 0
    for session, agent, tool, charged, n in groups:
        total += charged
        count += n
        for bucket, key in ((by_session, session), (by_agent, agent), (by_tool, tool)):
            if key is not None:
                bucket[key] = bucket.get(key, 0) + charged
    return Spend(
        total=from_micros(total),
        count=count,
        by_session={k: from_micros(v) for k, v in by_session.items()},
        by_agent={k: from_micros(v) for k, v in by_agent.items()},
        by_tool={k: from_micros(v) for k, v in by_tool.items()},
    )


def _check_entry(
    entry: StoredEntry, *, tenant_id: str, expected_index: int, expected_prev: bytes
) -> BadEntry | None:
    def bad(reason: str) -> BadEntry:
        return BadEntry(entry.entry_id, entry.leaf_index, reason)

    # Step 1: position.
    if entry.leaf_index != expected_index:
        return BadEntry(
            entry.entry_id,
            expected_index,
            f"expected leaf {expected_index}, found leaf {entry.leaf_index}: an entry is missing",
        )
    # Step 2: a canonical record of this tenant, under its own id.
    try:
        record = entry.record
        if not isinstance(record, dict) or canonical_bytes(record).decode() != entry.record_text:
            return bad("the stored record is not in canonical form: it was edited")
    except (ValueError, InvalidRequest):
        return bad("the stored record is not valid JSON: it was edited")
    if record.get("tenant_id") != tenant_id or record.get("entry_id") != entry.entry_id:
        return bad("the record names another tenant or entry id than its row")
    # Step 3: leaf and link.
    try:
        verify_entry(
            record,
            leaf_index=entry.leaf_index,
            leaf_hash=entry.leaf_hash,
            prev_hash=entry.prev_hash,
            entry_hash=entry.entry_hash,
            expected_prev=expected_prev,
            expected_index=expected_index,
        )
    except ChainError as exc:
        return bad(exc.reason)
    # Step 4: the index columns.
    try:
        expected_columns = indexed_fields(record)
    except (KeyError, ValueError, TypeError, InvalidRequest):
        return bad("the record lacks the fields an audit entry has")
    changed = sorted(name for name, value in expected_columns.items() if entry.columns.get(name) != value)
    if changed:
        return bad(f"column(s) {', '.join(changed)} no longer match the record: they were edited")
    return None
