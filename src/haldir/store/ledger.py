"""The ledger in SQL: group-committed appends that never fork, Merkle nodes, checkpoints, reads,
anomaly rules, and the `audit.flagged` events recorded with flagged entries."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.cache import Cache
from haldir.core import merkle, usage
from haldir.core.anomalies import (
    DEFAULT_SETTINGS,
    FLAGGED_EVENT,
    AnomalySettings,
    Rule,
    flagged_event,
    lookback,
    parse_condition,
)
from haldir.core.ledger import (
    GENESIS,
    EntryDraft,
    EntryFilter,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
    hash_entry,
    indexed_fields,
)
from haldir.store.outbox import event_row
from haldir.store.recent import Known, RecentEntries
from haldir.store.schema import (
    anomaly_rules,
    checkpoints,
    events,
    ledger_entries,
    ledger_heads,
    log_keys,
    merkle_nodes,
    usage_days,
)
from haldir.store.transaction import Change, Executes, PendingEntry, Queued
from haldir.store.writer import GroupCommitWriter

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

CACHED_RULE_TENANTS = 10_000
USAGE_COUNTERS = tuple(usage.Tally().counters())


class SqlLedger:
    def __init__(self, store: SqlStore, *, max_batch: int = 500) -> None:
        self._store = store
        self._writer: GroupCommitWriter[tuple[EntryDraft, Change | None], StoredEntry] = GroupCommitWriter(
            self._commit, max_batch=max_batch
        )
        self._recent = RecentEntries()
        self._head: _HeadStatements | None = None  # built once, in the store's dialect
        self._heads: set[str] = set()  # tenants whose head row exists (committed)
        # Each tenant's anomaly rules, for judging appends, until a change is announced (a rule change is).
        self._rules_cache: Cache[str, list[Rule]] = Cache(store.changes.epoch, maxsize=CACHED_RULE_TENANTS)
        # And their anomaly settings, likewise (changing them announces it).
        self._settings_cache: Cache[str, AnomalySettings] = Cache(
            store.changes.epoch, maxsize=CACHED_RULE_TENANTS
        )

    async def aclose(self) -> None:
        await self._writer.aclose()

    async def append(self, draft: EntryDraft, *, change: Change | None = None) -> StoredEntry:
        """Append after every entry committed before; returns once the entry (and `change`) is durable.

        On SQLite this is a turn in the process's group commit, like every write; on PostgreSQL appends
        wait for a batch of their own, which locks each tenant's head once for all of its entries.
        """
        if self._store.groups is not None:
            async with self._store.write_transaction() as tx:
                if change is not None:
                    tx.queue(change)
                pending = tx.append(draft)
            return pending.result()
        return await self._writer.submit((draft, change))

    async def _commit(self, batch: Sequence[tuple[EntryDraft, Change | None]]) -> list[StoredEntry]:
        async with self._store.write_transaction() as tx:
            for _, change in batch:
                if change is not None:
                    tx.queue(change)
            queued = [tx.append(draft) for draft, _ in batch]
        self._store.batch_committed(len(batch))
        return [pending.result() for pending in queued]

    async def append_pending(self, conn: Executes, pending: Sequence[Queued]) -> Callable[[], None]:
        """What a transaction queued, inside it: its changes (merged by key, in key order), then its
        entries, tenant by tenant (in tenant order, each tenant's in the order queued): the last thing a
        write transaction does before it commits. Returns what to run once it committed (this process
        then remembers the sessions' newest entries)."""
        changes: dict[tuple[str, ...], list[Change]] = {}
        by_tenant: dict[str, list[PendingEntry]] = {}
        for item in pending:
            if isinstance(item, PendingEntry):
                by_tenant.setdefault(item.draft.tenant_id, []).append(item)
            else:
                changes.setdefault(item.key, []).append(item)
        for key in sorted(changes):
            alike = changes[key]
            await alike[0].run(conn, alike)
        remembered: list[tuple[str, dict[str, Known]]] = []
        for tenant_id in sorted(by_tenant):
            mine = by_tenant[tenant_id]
            stored, latest = await self.append_in(conn, tenant_id, [item.draft for item in mine])
            for item, entry in zip(mine, stored, strict=True):
                item.stored = entry
            remembered.append((tenant_id, latest))

        flagged = any(
            item.stored is not None and item.stored.columns.get("flagged")
            for items in by_tenant.values()
            for item in items
        )

        def committed() -> None:
            if flagged:  # its audit.flagged events are in the outbox
                self._store.outbox.notify()
            for tenant_id, latest in remembered:
                self._recent.remember(tenant_id, latest)
                self._heads.add(tenant_id)

        return committed

    async def append_in(
        self, conn: Executes, tenant_id: str, drafts: list[EntryDraft]
    ) -> tuple[list[StoredEntry], dict[str, Known]]:
        """Judge and append `drafts` inside the caller's transaction, so they commit with what else it
        changes. Detection reads the tenant's rules and each session's latest entries in this same
        transaction, and sees the earlier drafts of the same session: a batch judges as one by one would."""
        # The head row serialises appenders of one tenant across processes and replicas: on PostgreSQL
        # the row lock is held until this transaction ends; SQLite's writer holds the database lock.
        statements = self._statements()
        if tenant_id not in self._heads:  # head rows are never deleted: once seen, no need to ask again
            await conn.execute(statements.ensure_head, {"p_tenant": tenant_id})
        head = (await conn.execute(statements.lock_head, {"p_tenant": tenant_id})).one()
        first, prev = int(head.size), bytes(head.head_hash)
        entries, latest = await self._judged(conn, tenant_id, drafts, first=first)
        leaves = [merkle.leaf_hash(entry.canonical) for entry in entries]
        stored_nodes = await self._nodes(conn, tenant_id, merkle.batch_reads(first, len(entries)))
        new_nodes = merkle.batch_completed_nodes(first, leaves, stored=stored_nodes)

        rows, stored, flagged = [], [], []
        for offset, (entry, leaf) in enumerate(zip(entries, leaves, strict=True)):
            entry_hash = hash_entry(prev, leaf)
            text = entry.canonical.decode()
            columns = indexed_fields(entry.record)
            row = {
                "tenant_id": tenant_id,
                "leaf_index": first + offset,
                "record": text,
                "leaf_hash": leaf,
                "prev_hash": prev,
                "entry_hash": entry_hash,
                **columns,
            }
            rows.append(row)
            stored.append(_stored(row))
            if entry.record["flagged"] is True:
                flagged.append(_flagged_event(tenant_id, row, entry.record))
            prev = entry_hash
        await conn.execute(sa.insert(ledger_entries), rows)
        await conn.execute(
            statements.count_usage,
            [
                {"tenant_id": tenant_id, "day": day, "agent_id": agent, **counts.counters()}
                for (day, agent), counts in sorted(usage.tally(rows).items())
            ],
        )
        if flagged:  # the outbox: an event commits with its entry, or neither does
            await conn.execute(sa.insert(events), flagged)
        await conn.execute(
            sa.insert(merkle_nodes),
            [{"tenant_id": tenant_id, "level": n.level, "idx": n.index, "hash": h} for n, h in new_nodes],
        )
        await conn.execute(
            statements.move_head, {"p_tenant": tenant_id, "p_size": first + len(entries), "p_hash": prev}
        )
        return stored, latest

    async def _judged(
        self, conn: Executes, tenant_id: str, drafts: list[EntryDraft], *, first: int
    ) -> tuple[list[NewEntry], dict[str, Known]]:
        """The drafts built into entries, each judged against the rules and its session's latest entries
        (newest first, the batch's earlier drafts before what is stored); and each session's newest
        entries afterwards, for this process to remember once they committed (leaves from `first`)."""
        rules = await self._judging_rules(conn, tenant_id)
        settings = await self._judging_settings(conn, tenant_id)
        depth = lookback(rules, settings)
        sessions = {draft.session_id for draft in drafts if draft.session_id is not None}
        history = await self._recent.read(conn, tenant_id, sessions, depth=depth) if sessions else {}
        entries, last = [], {}
        for offset, draft in enumerate(drafts):
            session = draft.session_id
            recent = history.get(session, []) if session is not None else []
            entries.append(draft.build(recent[:depth], rules, settings))
            if session is not None:
                history[session] = [draft.as_recent(), *recent[: depth - 1]]
                last[session] = first + offset
        return entries, {session: Known(index, depth, history[session]) for session, index in last.items()}

    # reads

    async def _nodes(
        self, conn: Executes, tenant_id: str, wanted: Sequence[merkle.NodeId] | set[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        if not wanted:
            return {}
        # Joined from a VALUES list rather than `(level, idx) IN (...)`: SQLite plans the IN list as a
        # scan of every node of the tenant, the join as one primary-key lookup per wanted node.
        parameters: dict[str, object] = {"tenant_id": tenant_id}
        for i, node in enumerate(wanted):
            parameters[f"l{i}"], parameters[f"i{i}"] = node.level, node.index
        rows = await conn.execute(_nodes_statement(len(parameters) // 2), parameters)
        return {merkle.NodeId(row.level, row.idx): bytes(row.hash) for row in rows}

    async def nodes(self, tenant_id: str, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        async with self._store.read_connection() as conn:
            return await self._nodes(conn, tenant_id, wanted)

    async def size(self, tenant_id: str) -> int:
        async with self._store.read_connection() as conn:
            size = (
                await conn.execute(
                    sa.select(ledger_heads.c.size).where(ledger_heads.c.tenant_id == tenant_id)
                )
            ).scalar()
        return int(size or 0)

    async def get(self, tenant_id: str, entry_id: str) -> StoredEntry | None:
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(ledger_entries).where(
                        ledger_entries.c.tenant_id == tenant_id, ledger_entries.c.entry_id == entry_id
                    )
                )
            ).first()
        return None if row is None else _stored(row._asdict())

    async def page(
        self, tenant_id: str, *, where: EntryFilter, limit: int, before: int | None, after: int | None = None
    ) -> list[StoredEntry]:
        """Newest first, `limit` entries with a leaf index below `before`; or, when `after` is given
        (-1 for the start), oldest first above it."""
        c = ledger_entries.c
        query = _selected(sa.select(ledger_entries), tenant_id, where)
        if before is not None:
            query = query.where(c.leaf_index < before)
        if after is not None:
            query = query.where(c.leaf_index > after).order_by(c.leaf_index)
        else:
            query = query.order_by(c.leaf_index.desc())
        query = query.limit(limit)
        async with self._store.read_connection() as conn:
            return [_stored(row._asdict()) for row in await conn.execute(query)]

    async def scan(self, tenant_id: str, *, start: int = 0, chunk: int = 1000) -> AsyncIterator[StoredEntry]:
        """Every entry from `start` in leaf order, read `chunk` at a time (no row cap, bounded memory)."""
        c = ledger_entries.c
        position = start
        while True:
            async with self._store.scan_connection() as conn:
                rows = (
                    await conn.execute(
                        sa.select(ledger_entries)
                        .where(c.tenant_id == tenant_id, c.leaf_index >= position)
                        .order_by(c.leaf_index)
                        .limit(chunk)
                    )
                ).all()
            for row in rows:
                yield _stored(row._asdict())
            if len(rows) < chunk:
                return
            position = int(rows[-1].leaf_index) + 1

    async def spend(
        self, tenant_id: str, *, where: EntryFilter
    ) -> list[tuple[str | None, str | None, str, int, int]]:
        """(session_id, agent_id, tool, total charged micros, count) per group, for the entries selected."""
        c = ledger_entries.c
        query = _selected(
            sa.select(c.session_id, c.agent_id, c.tool, sa.func.sum(c.charged), sa.func.count()),
            tenant_id,
            where,
        ).group_by(c.session_id, c.agent_id, c.tool)
        async with self._store.scan_connection() as conn:
            return [(r[0], r[1], r[2], int(r[3] or 0), int(r[4])) for r in await conn.execute(query)]

    # anomaly rules

    async def add_rule(self, tenant_id: str, rule: Rule) -> None:
        async with self._store.write_transaction() as conn:
            await conn.execute(
                sa.insert(anomaly_rules).values(
                    tenant_id=tenant_id,
                    rule_id=rule.rule_id,
                    type=rule.type,
                    params=rule.params(),
                    created_at=rule.created_at,
                )
            )

    async def list_rules(self, tenant_id: str) -> list[Rule]:
        """The tenant's rules, oldest first."""
        async with self._store.read_connection() as conn:
            return await self._rules(conn, tenant_id)

    async def _judging_rules(self, conn: Executes, tenant_id: str) -> list[Rule]:
        """The tenant's rules for judging a batch: from memory while no rule changed anywhere (changing
        one announces it), else read in the appending transaction."""
        rules = await self._rules_cache.read_through(tenant_id, lambda: self._rules(conn, tenant_id))
        assert rules is not None  # a tenant without rules has an empty list
        return rules

    async def _judging_settings(self, conn: Executes, tenant_id: str) -> AnomalySettings:
        """The tenant's anomaly settings for judging a batch, cached as its rules are."""

        async def load() -> AnomalySettings:
            return await self._store.limits.anomaly_settings(conn, tenant_id) or DEFAULT_SETTINGS

        found = await self._settings_cache.read_through(tenant_id, load)
        assert found is not None
        return found

    async def _rules(self, conn: Executes, tenant_id: str) -> list[Rule]:
        rows = await conn.execute(_TENANT_RULES, {"p_tenant": tenant_id})
        return [_rule(row._asdict()) for row in rows]

    def _statements(self) -> _HeadStatements:
        if self._head is None:
            self._head = _HeadStatements.for_store(self._store)
        return self._head

    async def delete_rule(self, tenant_id: str, rule_id: str) -> Rule | None:
        """Delete a rule; the rule as it was, or None when the tenant has no such rule."""
        where = (anomaly_rules.c.tenant_id == tenant_id, anomaly_rules.c.rule_id == rule_id)
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(sa.delete(anomaly_rules).where(*where).returning(*anomaly_rules.c))
            ).first()
        return None if row is None else _rule(row._asdict())

    # checkpoints and the log key

    async def latest_checkpoint(self, tenant_id: str) -> StoredCheckpoint | None:
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(checkpoints)
                    .where(checkpoints.c.tenant_id == tenant_id)
                    .order_by(checkpoints.c.tree_size.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return StoredCheckpoint(int(row.tree_size), bytes(row.root_hash), row.note, row.signed_at)

    async def save_checkpoint(self, tenant_id: str, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint; one for the same size may already exist (signatures are
        deterministic, so it is the same note)."""
        async with self._store.write_transaction() as conn:
            await conn.execute(
                self._store.insert(checkpoints)
                .values(
                    tenant_id=tenant_id,
                    tree_size=checkpoint.tree_size,
                    root_hash=checkpoint.root_hash,
                    note=checkpoint.note,
                    signed_at=checkpoint.signed_at,
                )
                .on_conflict_do_nothing(index_elements=["tenant_id", "tree_size"])
            )

    async def record_log_key(self, vkey: str, *, at: datetime) -> str:
        """Record `vkey` as the deployment's log key unless one is recorded; return the recorded one."""
        async with self._store.write_transaction() as conn:
            await conn.execute(
                self._store.insert(log_keys)
                .values(tenant_id="*", vkey=vkey, created_at=at)
                .on_conflict_do_nothing(index_elements=["tenant_id"])
            )
            return str(
                (await conn.execute(sa.select(log_keys.c.vkey).where(log_keys.c.tenant_id == "*"))).scalar()
            )


# Statements every append runs, built once: constructing one costs more than running it.


@functools.lru_cache(maxsize=256)
def _nodes_statement(count: int) -> sa.TextualSelect:
    """The stored nodes among `count` wanted (level, index) pairs: text built and compiled once per
    count, where a VALUES expression built per call was compiled anew every time (its values are part of
    its cache key)."""
    values = ", ".join(f"(CAST(:l{i} AS SMALLINT), CAST(:i{i} AS BIGINT))" for i in range(count))
    return sa.text(
        f"WITH wanted(level, idx) AS (VALUES {values}) "  # noqa: S608 - placeholders only
        "SELECT n.level, n.idx, n.hash FROM wanted JOIN merkle_nodes n "
        "ON n.tenant_id = :tenant_id AND n.level = wanted.level AND n.idx = wanted.idx"
    ).columns(merkle_nodes.c.level, merkle_nodes.c.idx, merkle_nodes.c.hash)


_TENANT_RULES = (
    sa.select(anomaly_rules)
    .where(anomaly_rules.c.tenant_id == sa.bindparam("p_tenant"))
    .order_by(anomaly_rules.c.created_at, anomaly_rules.c.rule_id)
)


@dataclass(frozen=True)
class _HeadStatements:
    ensure_head: Any
    lock_head: Any
    move_head: Any
    count_usage: Any

    @classmethod
    def for_store(cls, store: SqlStore) -> _HeadStatements:
        h = ledger_heads.c
        return cls(
            ensure_head=store.insert(ledger_heads)
            .values(tenant_id=sa.bindparam("p_tenant"), size=0, head_hash=GENESIS)
            .on_conflict_do_nothing(index_elements=["tenant_id"]),
            lock_head=sa.select(h.size, h.head_hash)
            .where(h.tenant_id == sa.bindparam("p_tenant"))
            .with_for_update(),
            move_head=sa.update(ledger_heads)
            .where(h.tenant_id == sa.bindparam("p_tenant"))
            .values(size=sa.bindparam("p_size"), head_hash=sa.bindparam("p_hash")),
            count_usage=_count_usage(store),
        )


def _count_usage(store: SqlStore) -> Any:
    """Add a batch's counts to the tenant's daily counters (one row per day and agent)."""
    insert = store.insert(usage_days)
    return insert.on_conflict_do_update(
        index_elements=["tenant_id", "day", "agent_id"],
        set_={name: usage_days.c[name] + insert.excluded[name] for name in USAGE_COUNTERS},
    )


def _flagged_event(tenant_id: str, row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    payload = flagged_event(record, leaf_index=row["leaf_index"])
    return event_row(tenant_id, FLAGGED_EVENT, payload, at=row["created_at"])


def _rule(row: dict[str, Any]) -> Rule:
    return Rule(
        rule_id=row["rule_id"],
        condition=parse_condition(row["type"], row["params"]),
        created_at=row["created_at"],
    )


def _selected(query: Any, tenant_id: str, where: EntryFilter) -> Any:
    """`query` narrowed to the tenant's entries that `where` selects (None fields select everything)."""
    c = ledger_entries.c
    query = query.where(c.tenant_id == tenant_id)
    for column, value in (
        (c.session_id, where.session_id),
        (c.agent_id, where.agent_id),
        (c.tool, where.tool),
        (c.status, where.status),
        (c.flagged, where.flagged),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(c.created_at >= where.since)
    if where.until is not None:
        query = query.where(c.created_at < where.until)
    return query


def _stored(row: dict[str, Any]) -> StoredEntry:
    columns = {
        name: row[name]
        for name in (
            "entry_id",
            "session_id",
            "agent_id",
            "tool",
            "status",
            "flagged",
            "cost",
            "charged",
            "created_at",
        )
    }
    return StoredEntry(
        tenant_id=row["tenant_id"],
        leaf_index=int(row["leaf_index"]),
        entry_id=row["entry_id"],
        record_text=row["record"],
        leaf_hash=bytes(row["leaf_hash"]),
        prev_hash=bytes(row["prev_hash"]),
        entry_hash=bytes(row["entry_hash"]),
        columns=columns,
    )
