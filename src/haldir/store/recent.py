"""Each session's latest ledger entries, remembered by this process between appends.

Anomaly detection looks back on a session's latest entries (`lookback(rules, settings)` of them, 61 by
default) for every entry it judges; reading them afresh for every batch costs more than the append itself.
So this process remembers them, and inside the appending transaction (which holds the tenant's ledger
head, so no one appends meanwhile) reads only what was appended since, by any process. It is exact, not a
cache with a staleness bound: what is remembered is updated only after the transaction that appended it
committed.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa

from haldir.core.anomalies import RecentEntry
from haldir.store.schema import ledger_entries
from haldir.store.transaction import Executes

MAX_SESSIONS = 4096  # sessions remembered per process; the least recently used are forgotten


@dataclass(frozen=True)
class Known:
    """A session's newest entries, newest first (at most `depth`), up to and including leaf `last`."""

    last: int
    depth: int
    entries: list[RecentEntry]


class RecentEntries:
    def __init__(self, *, maxsize: int = MAX_SESSIONS) -> None:
        self._maxsize = maxsize
        self._known: OrderedDict[tuple[str, str], Known] = OrderedDict()

    async def read(
        self, conn: Executes, tenant_id: str, sessions: set[str], *, depth: int
    ) -> dict[str, list[RecentEntry]]:
        """The latest `depth` entries of each session, newest first, as committed when `conn`'s
        transaction began (call it where the tenant's head is held)."""
        remembered = {
            session: known
            for session in sessions
            if (known := self._known.get((tenant_id, session))) is not None and known.depth >= depth
        }
        found = {session: list(known.entries) for session, known in remembered.items()}
        newer = await self._newer(conn, tenant_id, {s: known.last for s, known in remembered.items()})
        for session, rows in newer.items():
            found[session] = [*rows, *found[session]][:depth]
        found.update(await self._latest(conn, tenant_id, sessions - set(remembered), depth=depth))
        return found

    def remember(self, tenant_id: str, latest: dict[str, Known]) -> None:
        """After the transaction that appended them committed: each session's newest entries now."""
        for session, known in latest.items():
            key = (tenant_id, session)
            self._known[key] = known
            self._known.move_to_end(key)
        while len(self._known) > self._maxsize:
            self._known.popitem(last=False)

    async def _newer(
        self, conn: Executes, tenant_id: str, since: dict[str, int]
    ) -> dict[str, list[RecentEntry]]:
        """Entries appended after what is remembered (by other processes), newest first: one statement,
        one index range per session, whatever the number of sessions."""
        if not since:
            return {}
        parameters: dict[str, object] = {"tenant_id": tenant_id}
        for i, (session, last) in enumerate(sorted(since.items())):
            parameters[f"s{i}"], parameters[f"k{i}"] = session, last
        return _grouped(await conn.execute(_newer_statement(len(since)), parameters))

    async def _latest(
        self, conn: Executes, tenant_id: str, sessions: set[str], *, depth: int
    ) -> dict[str, list[RecentEntry]]:
        """The latest `depth` entries of sessions not remembered: one index range read backwards each."""
        if not sessions:
            return {}
        c = ledger_entries.c
        parts = [
            _columns()
            .where(c.tenant_id == tenant_id, c.session_id == session)
            .order_by(c.leaf_index.desc())
            .limit(depth)
            .subquery()
            .select()
            for session in sorted(sessions)
        ]
        query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        rows = sorted(await conn.execute(query), key=lambda row: -row.leaf_index)
        return {session: [] for session in sessions} | _grouped(rows)


@functools.lru_cache(maxsize=64)
def _newer_statement(count: int) -> sa.TextualSelect:
    """The entries of `count` sessions after each one's last remembered leaf, newest first. A text
    statement: built and compiled once per number of sessions, where an expression built per batch costs
    more than running it."""
    values = ", ".join(f"(CAST(:s{i} AS VARCHAR(64)), CAST(:k{i} AS BIGINT))" for i in range(count))
    return sa.text(
        f"WITH remembered(session_id, last) AS (VALUES {values}) "  # noqa: S608 - placeholders only
        "SELECT e.session_id, e.leaf_index, e.created_at, e.cost, e.status, e.tool "
        "FROM remembered JOIN ledger_entries e ON e.tenant_id = :tenant_id "
        "AND e.session_id = remembered.session_id AND e.leaf_index > remembered.last "
        "ORDER BY e.leaf_index DESC"
    ).columns(
        ledger_entries.c.session_id,
        ledger_entries.c.leaf_index,
        ledger_entries.c.created_at,
        ledger_entries.c.cost,
        ledger_entries.c.status,
        ledger_entries.c.tool,
    )


def _columns() -> sa.Select[tuple[str | None, int, object, int, str, str]]:
    c = ledger_entries.c
    return sa.select(c.session_id, c.leaf_index, c.created_at, c.cost, c.status, c.tool)


def _grouped(rows: object) -> dict[str, list[RecentEntry]]:
    found: dict[str, list[RecentEntry]] = {}
    for row in rows:  # type: ignore[attr-defined]
        found.setdefault(row.session_id, []).append(
            RecentEntry(timestamp=row.created_at, cost_micros=int(row.cost), status=row.status, tool=row.tool)
        )
    return found
