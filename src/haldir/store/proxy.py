"""The proxy in SQL: upstreams, tool pins and policies of each tenant. Every change commits together
with the ledger entry that records it. (Rate-limit and spend-limit counters change inside a spend
transaction, see `store.spend`.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.core.ledger import EntryDraft
from haldir.core.policies import Policy, parse_policy
from haldir.core.tools import OpenCall, SeenTool, ToolChanges, ToolPin, Upstream, diff_tools
from haldir.core.webhooks import TOOL_DEFINITION_CHANGED, tool_changed_data
from haldir.store.outbox import record_event
from haldir.store.schema import (
    proxy_calls,
    proxy_policies,
    proxy_rate_counters,
    proxy_spend_counters,
    proxy_tools,
    proxy_upstreams,
)
from haldir.store.transaction import Writing

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

EntriesFor = Callable[[ToolChanges], list[EntryDraft]]


class SqlProxy:
    """Implements `haldir.store.ports.ProxyStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # upstreams

    async def insert_upstream(self, upstream: Upstream, *, entry: EntryDraft) -> bool:
        """Store a new upstream with its ledger entry; False (nothing stored) when the name is taken."""
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, upstream.tenant_id, at=upstream.created_at)
            inserted = await conn.execute(
                self._store.insert(proxy_upstreams)
                .values(**_upstream_row(upstream))
                .on_conflict_do_nothing(index_elements=["tenant_id", "name"])
            )
            if inserted.rowcount != 1:
                return False
            await self._append(conn, [entry])
            return True

    async def get_upstream(self, tenant_id: str, name: str) -> Upstream | None:
        c = proxy_upstreams.c
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(sa.select(proxy_upstreams).where(c.tenant_id == tenant_id, c.name == name))
            ).first()
        return None if row is None else _upstream(row)

    async def list_upstreams(self, tenant_id: str) -> list[Upstream]:
        c = proxy_upstreams.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(proxy_upstreams).where(c.tenant_id == tenant_id).order_by(c.name)
            )
            return [_upstream(row) for row in rows]

    async def delete_upstream(self, tenant_id: str, name: str, *, entry: EntryDraft) -> bool:
        """Delete an upstream and its tool pins, with the ledger entry; False when there was none."""
        async with self._store.write_transaction() as conn:
            deleted = await conn.execute(
                sa.delete(proxy_upstreams).where(
                    proxy_upstreams.c.tenant_id == tenant_id, proxy_upstreams.c.name == name
                )
            )
            if deleted.rowcount != 1:
                return False
            await conn.execute(
                sa.delete(proxy_tools).where(
                    proxy_tools.c.tenant_id == tenant_id, proxy_tools.c.upstream == name
                )
            )
            await self._append(conn, [entry])
            return True

    # tools

    async def list_tools(self, tenant_id: str, *, upstream: str | None = None) -> list[ToolPin]:
        """The tenant's tools that their upstreams still list, by upstream then name."""
        c = proxy_tools.c
        query = sa.select(proxy_tools).where(c.tenant_id == tenant_id, c.removed_at.is_(None))
        if upstream is not None:
            query = query.where(c.upstream == upstream)
        async with self._store.read_connection() as conn:
            rows = await conn.execute(query.order_by(c.upstream, c.name))
            return [_tool(row) for row in rows]

    async def sync_tools(
        self, tenant_id: str, upstream: str, seen: list[SeenTool], *, at: datetime, entries: EntriesFor
    ) -> ToolChanges | None:
        """Bring an upstream's pins up to date with what it lists now, and append the entries that
        `entries` makes of the changes, in one transaction; None when the upstream does not exist.

        The upstream's row is locked first, so concurrent syncs of one upstream (from several replicas)
        apply one after the other, each to what the one before committed.
        """
        c = proxy_tools.c
        async with self._store.write_transaction() as conn:
            locked = await conn.execute(
                sa.select(proxy_upstreams.c.name)
                .where(proxy_upstreams.c.tenant_id == tenant_id, proxy_upstreams.c.name == upstream)
                .with_for_update()
            )
            if locked.first() is None:
                return None
            where = (c.tenant_id == tenant_id, c.upstream == upstream)
            known = [_tool(row) for row in await conn.execute(sa.select(proxy_tools).where(*where))]
            changes = diff_tools(known, seen)
            await _apply(conn, tenant_id, upstream, known, seen, changes, at=at)
            await self._append(conn, entries(changes))
            for change in changes.changed:  # its calls now wait for an operator: tell the webhooks
                data = tool_changed_data(
                    upstream, change.name, pinned_hash=change.pinned_hash, current_hash=change.current_hash
                )
                await record_event(conn, tenant_id, TOOL_DEFINITION_CHANGED, data, at=at)
        return changes

    async def approve_tool(
        self, tenant_id: str, upstream: str, name: str, *, current_hash: str, at: datetime, entry: EntryDraft
    ) -> ToolPin | None:
        """Pin the pending definition of a changed tool, if it is still the one with `current_hash`; the
        tool afterwards, or None when it was not (another sync or approval came first)."""
        c = proxy_tools.c
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(proxy_tools)
                    .where(
                        c.tenant_id == tenant_id,
                        c.upstream == upstream,
                        c.name == name,
                        c.current_hash == current_hash,
                        c.pinned_hash != current_hash,
                        c.removed_at.is_(None),
                    )
                    .values(
                        definition=c.pending_definition,
                        pinned_hash=c.current_hash,
                        pending_definition=None,
                        updated_at=at,
                    )
                    .returning(*proxy_tools.c)
                )
            ).first()
            if row is None:
                return None
            await self._append(conn, [entry])
        return _tool(row)

    # policies

    async def insert_policy(self, tenant_id: str, policy: Policy, *, entry: EntryDraft) -> None:
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, tenant_id, at=policy.created_at)
            await conn.execute(
                sa.insert(proxy_policies).values(
                    tenant_id=tenant_id,
                    policy_id=policy.policy_id,
                    type=policy.type,
                    spec=policy.spec,
                    created_at=policy.created_at,
                )
            )
            await self._append(conn, [entry])

    async def list_policies(self, tenant_id: str) -> list[Policy]:
        """The tenant's policies, oldest first."""
        c = proxy_policies.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(proxy_policies).where(c.tenant_id == tenant_id).order_by(c.created_at, c.policy_id)
            )
            return [_policy(row) for row in rows]

    async def delete_policy(
        self, tenant_id: str, policy_id: str, *, entry: Callable[[Policy], EntryDraft]
    ) -> Policy | None:
        """Delete a policy and its counters, with the ledger entry `entry` makes of it; None when there
        was none."""
        c = proxy_policies.c
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.delete(proxy_policies)
                    .where(c.tenant_id == tenant_id, c.policy_id == policy_id)
                    .returning(*proxy_policies.c)
                )
            ).first()
            if row is None:
                return None
            policy = _policy(row)
            for counters in (proxy_rate_counters, proxy_spend_counters):
                await conn.execute(
                    sa.delete(counters).where(
                        counters.c.tenant_id == tenant_id, counters.c.policy_id == policy_id
                    )
                )
            await self._append(conn, [entry(policy)])
        return policy

    async def stale_calls(self, *, admitted_before: datetime, limit: int) -> list[OpenCall]:
        """Admitted calls of every tenant with no outcome recorded, admitted before `admitted_before`."""
        c = proxy_calls.c
        query = (
            sa.select(proxy_calls)
            .where(c.closed_at.is_(None), c.admitted_at < admitted_before)
            .order_by(c.admitted_at)
            .limit(limit)
        )
        async with self._store.read_connection() as conn:
            rows = (await conn.execute(query)).all()
        return [_call(row) for row in rows]

    async def get_call(self, tenant_id: str, call_id: str) -> OpenCall | None:
        c = proxy_calls.c
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(proxy_calls).where(c.tenant_id == tenant_id, c.call_id == call_id)
                )
            ).first()
        return None if row is None else _call(row)

    async def purge_closed_calls(self, *, closed_before: datetime, limit: int) -> int:
        """Delete up to `limit` calls closed before the time, oldest first, in one transaction."""
        c = proxy_calls.c
        oldest = (
            sa.select(c.tenant_id, c.call_id)
            .where(c.closed_at.is_not(None), c.closed_at < closed_before)
            .order_by(c.closed_at)
            .limit(limit)
        )
        async with self._store.write_transaction() as conn:
            keys = (await conn.execute(oldest)).all()
            for tenant_id, call_id in keys:
                await conn.execute(
                    sa.delete(proxy_calls).where(c.tenant_id == tenant_id, c.call_id == call_id)
                )
        return len(keys)

    async def _append(self, tx: Writing, entries: list[EntryDraft]) -> None:
        for entry in entries:
            tx.append(entry)


async def _apply(
    conn: Writing,
    tenant_id: str,
    upstream: str,
    known: list[ToolPin],
    seen: list[SeenTool],
    changes: ToolChanges,
    *,
    at: datetime,
) -> None:
    """Write what `diff_tools` found: inserts for new tools, updates for the rest."""
    c = proxy_tools.c
    stored = {pin.name: pin for pin in known}
    listed = {tool.name: tool for tool in seen}

    def one(name: str) -> Any:
        return sa.update(proxy_tools).where(c.tenant_id == tenant_id, c.upstream == upstream, c.name == name)

    for name in changes.added:
        tool = listed[name]
        if name in stored:  # back after removal, with the definition it had
            await conn.execute(one(name).values(removed_at=None, updated_at=at))
            continue
        await conn.execute(
            sa.insert(proxy_tools).values(
                tenant_id=tenant_id,
                upstream=upstream,
                name=name,
                definition=tool.definition,
                pinned_hash=tool.hash,
                current_hash=tool.hash,
                pending_definition=None,
                first_seen_at=at,
                updated_at=at,
                removed_at=None,
            )
        )
    for change in changes.changed:
        tool = listed[change.name]
        await conn.execute(
            one(change.name).values(
                current_hash=tool.hash, pending_definition=tool.definition, removed_at=None, updated_at=at
            )
        )
    for name in changes.reverted:
        await conn.execute(
            one(name).values(
                current_hash=c.pinned_hash, pending_definition=None, removed_at=None, updated_at=at
            )
        )
    for name in changes.removed:
        await conn.execute(one(name).values(removed_at=at, updated_at=at))


def _upstream_row(upstream: Upstream) -> dict[str, Any]:
    return {
        "tenant_id": upstream.tenant_id,
        "name": upstream.name,
        "transport": upstream.transport,
        "url": upstream.url,
        "headers": upstream.headers,
        "command": upstream.command,
        "args": list(upstream.args),
        "env": upstream.env,
        "created_at": upstream.created_at,
        "updated_at": upstream.updated_at,
    }


def _upstream(row: sa.Row[Any]) -> Upstream:
    return Upstream(
        tenant_id=row.tenant_id,
        name=row.name,
        transport=row.transport,
        url=row.url,
        headers=dict(row.headers),
        command=row.command,
        args=tuple(row.args),
        env=dict(row.env),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _tool(row: sa.Row[Any]) -> ToolPin:
    return ToolPin(
        tenant_id=row.tenant_id,
        upstream=row.upstream,
        name=row.name,
        definition=row.definition,
        pinned_hash=row.pinned_hash,
        current_hash=row.current_hash,
        pending_definition=row.pending_definition,
        first_seen_at=row.first_seen_at,
        updated_at=row.updated_at,
        removed_at=row.removed_at,
    )


def _call(row: sa.Row[Any]) -> OpenCall:
    return OpenCall(
        tenant_id=row.tenant_id,
        call_id=row.call_id,
        session_id=row.session_id,
        agent_id=row.agent_id,
        tool=row.tool,
        cost_micros=int(row.cost),
        admitted_at=row.admitted_at,
        details=row.details,
        closed_at=row.closed_at,
        outcome=row.outcome,
    )


def _policy(row: sa.Row[Any]) -> Policy:
    return Policy(policy_id=row.policy_id, rule=parse_policy(row.spec), created_at=row.created_at)
