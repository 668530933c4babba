"""The ledger in SQL: group-committed appends that never fork, Merkle nodes, checkpoints, reads,
anomaly rules, and the `audit.flagged` events recorded with flagged entries."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from haldir.core import ids, merkle
from haldir.core.anomalies import EVENT, FLAGGED_EVENT, RecentEntry, Rule, flagged_event, parse_condition
from haldir.core.ledger import (
    GENESIS,
    EntryFilter,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
    hash_entry,
    indexed_fields,
)
from haldir.store.schema import (
    anomaly_rules,
    checkpoints,
    events,
    ledger_entries,
    ledger_heads,
    log_keys,
    merkle_nodes,
)
from haldir.store.writer import GroupCommitWriter

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore


@dataclass(frozen=True)
class Also:
    """A change that commits with an entry, in its batch's transaction. Changes run before the appends,
    in `lock_key` order, so that batches on different replicas lock rows in one order and the ledger head
    last, as every other transaction does: no deadlocks."""

    lock_key: tuple[str, ...]
    run: Callable[[AsyncConnection], Awaitable[object]]


class SqlLedger:
    def __init__(self, store: SqlStore, *, max_batch: int = 500) -> None:
        self._store = store
        self._writer: GroupCommitWriter[tuple[NewEntry, Also | None], StoredEntry] = GroupCommitWriter(
            self._commit, max_batch=max_batch
        )

    async def aclose(self) -> None:
        await self._writer.aclose()

    async def append(self, entry: NewEntry, *, also: Also | None = None) -> StoredEntry:
        """Append after every entry committed before; returns once the entry (and `also`) is durable."""
        return await self._writer.submit((entry, also))

    async def _commit(self, batch: Sequence[tuple[NewEntry, Also | None]]) -> list[StoredEntry]:
        results: dict[int, StoredEntry] = {}
        order = sorted(range(len(batch)), key=lambda i: batch[i][0].tenant_id)
        changes = sorted((also for _, also in batch if also is not None), key=lambda also: also.lock_key)
        async with self._store.write_transaction() as conn:
            for change in changes:
                await change.run(conn)
            for tenant_id, group in itertools.groupby(order, key=lambda i: batch[i][0].tenant_id):
                positions = list(group)
                stored = await self.append_in(conn, tenant_id, [batch[i][0] for i in positions])
                results.update(zip(positions, stored, strict=True))
        return [results[i] for i in range(len(batch))]

    async def append_in(
        self, conn: AsyncConnection, tenant_id: str, entries: list[NewEntry]
    ) -> list[StoredEntry]:
        """Append `entries` inside the caller's transaction, so they commit with what else it changes."""
        # The head row serialises appenders of one tenant across processes and replicas: on PostgreSQL
        # the row lock is held until this transaction ends; SQLite's writer holds the database lock.
        await conn.execute(
            self._store.insert(ledger_heads)
            .values(tenant_id=tenant_id, size=0, head_hash=GENESIS)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        head = (
            await conn.execute(
                sa.select(ledger_heads.c.size, ledger_heads.c.head_hash)
                .where(ledger_heads.c.tenant_id == tenant_id)
                .with_for_update()
            )
        ).one()
        first, prev = int(head.size), bytes(head.head_hash)
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
        if flagged:  # the outbox: an event commits with its entry, or neither does
            await conn.execute(sa.insert(events), flagged)
        await conn.execute(
            sa.insert(merkle_nodes),
            [{"tenant_id": tenant_id, "level": n.level, "idx": n.index, "hash": h} for n, h in new_nodes],
        )
        await conn.execute(
            sa.update(ledger_heads)
            .where(ledger_heads.c.tenant_id == tenant_id)
            .values(size=first + len(entries), head_hash=prev)
        )
        return stored

    # reads

    async def _nodes(
        self, conn: AsyncConnection, tenant_id: str, wanted: Sequence[merkle.NodeId] | set[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        if not wanted:
            return {}
        # Joined from a VALUES list rather than `(level, idx) IN (...)`: SQLite plans the IN list as a
        # scan of every node of the tenant, the join as one primary-key lookup per wanted node.
        pairs = (
            sa.values(sa.column("level", sa.SmallInteger()), sa.column("idx", sa.BigInteger()), name="wanted")
            .data([(node.level, node.index) for node in wanted])
            .cte("wanted")
        )
        rows = await conn.execute(
            sa.select(merkle_nodes.c.level, merkle_nodes.c.idx, merkle_nodes.c.hash)
            .select_from(pairs)
            .join(
                merkle_nodes,
                sa.and_(
                    merkle_nodes.c.tenant_id == tenant_id,
                    merkle_nodes.c.level == pairs.c.level,
                    merkle_nodes.c.idx == pairs.c.idx,
                ),
            )
        )
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
            async with self._store.read_connection() as conn:
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

    async def recent(self, tenant_id: str, session_id: str, *, limit: int) -> list[RecentEntry]:
        """The latest `limit` entries of a session, newest first: what anomaly detectors look back on."""
        c = ledger_entries.c
        query = (
            sa.select(c.created_at, c.cost, c.status, c.tool)
            .where(c.tenant_id == tenant_id, c.session_id == session_id)
            .order_by(c.leaf_index.desc())
            .limit(limit)
        )
        async with self._store.read_connection() as conn:
            return [
                RecentEntry(
                    timestamp=row.created_at, cost_micros=int(row.cost), status=row.status, tool=row.tool
                )
                for row in await conn.execute(query)
            ]

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
        async with self._store.read_connection() as conn:
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
            rows = await conn.execute(
                sa.select(anomaly_rules)
                .where(anomaly_rules.c.tenant_id == tenant_id)
                .order_by(anomaly_rules.c.created_at, anomaly_rules.c.rule_id)
            )
            return [_rule(row._asdict()) for row in rows]

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


def _flagged_event(tenant_id: str, row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "event_id": ids.new_id(EVENT),
        "type": FLAGGED_EVENT,
        "payload": flagged_event(record, leaf_index=row["leaf_index"]),
        "created_at": row["created_at"],
        "delivered_at": None,
    }


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
