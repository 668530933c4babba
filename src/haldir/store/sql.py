"""The SQL store: one implementation of every port over SQLAlchemy Core, for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.base import Executable

from haldir.core.idempotency import IdempotencyClaim, Outcome
from haldir.core.keys import ApiKey
from haldir.core.pagination import Page, Position
from haldir.core.payments import Payment
from haldir.core.sessions import Session
from haldir.core.webhooks import SESSION_REVOKED, session_revoked_data
from haldir.errors import IdempotencyKeyReused, StoreUnavailable
from haldir.store.approvals import SqlApprovals
from haldir.store.changes import CHANNEL, ChangeCounter, Changes, LocalCounter, Notify, counter_path
from haldir.store.engines import Backend, Engines, create_engines
from haldir.store.evidence import SqlEvidence
from haldir.store.group import Batch, GroupTransactions, writer_lock_path
from haldir.store.inline import InlineConnection
from haldir.store.ledger import SqlLedger
from haldir.store.limits import SqlLimits
from haldir.store.outbox import Outbox, record_event
from haldir.store.proxy import SqlProxy
from haldir.store.retention import SqlRetention
from haldir.store.rows import key_from_row, key_row, session_from_row, session_row
from haldir.store.schema import api_keys, epoch_micros, from_epoch_micros, idempotency_keys, sessions, tenants
from haldir.store.spend import SqlSpend, get_payment, list_payments
from haldir.store.transaction import Executes, Writing
from haldir.store.usage import SqlUsage
from haldir.store.vault import SqlVault
from haldir.store.webhooks import SqlWebhooks


class SqlStore:
    """Implements `haldir.store.ports.Store`. Every query names its tenant, except the key lookup
    that finds the tenant of a request."""

    def __init__(self, engines: Engines, *, data_dir: Path | None = None) -> None:
        self._engines = engines
        self.changes = _changes(engines, data_dir, notify=self._notify)
        self.ledger = SqlLedger(self)
        self.vault = SqlVault(self)
        self.proxy = SqlProxy(self)
        self.approvals = SqlApprovals(self)
        self.webhooks = SqlWebhooks(self)
        self.evidence = SqlEvidence(self)
        self.usage = SqlUsage(self)
        self.retention = SqlRetention(self)
        self.limits = SqlLimits(self)
        self.outbox = Outbox()  # wakes this process's webhook delivery worker when events commit
        self.batch_listeners: list[Callable[[int], None]] = []  # told each group commit's size
        # SQLite: every write transaction of this process is a turn in one group commit.
        self.groups: GroupTransactions | None = None
        if engines.inline_write is not None and engines.database is not None:
            self.groups = GroupTransactions(
                engines.inline_write,
                writer_lock_path(engines.database),
                finish=self._append_queued,
                committed=self.batch_committed,
            )
        self._reader: Connection | None = None  # SQLite: the inline reader of this process

    def batch_committed(self, size: int) -> None:
        """`size` writes shared one durable commit."""
        for listener in self.batch_listeners:
            listener(size)

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10, data_dir: Path | None = None) -> SqlStore:
        """The store at `url`. `data_dir` is where this machine's processes share their change counter
        on PostgreSQL (on SQLite it lies beside the database)."""
        return cls(create_engines(url, pool_size=pool_size), data_dir=data_dir)

    async def _notify(self, payload: str) -> None:
        async with self._engines.write.connect() as conn:
            await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
            await conn.commit()

    @property
    def backend(self) -> Backend:
        return self._engines.backend

    @property
    def engines(self) -> Engines:
        return self._engines

    async def close(self) -> None:
        await self.ledger.aclose()
        if self.groups is not None:
            await self.groups.aclose()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.changes.close()
        await self._engines.dispose()

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[Writing]:
        """A write transaction, durable when the block is left; an unreachable store raises
        `StoreUnavailable`. Ledger entries it queues are appended last, inside it.

        On SQLite it is a turn in this process's group commit (`haldir.store.group`): its statements
        run inline under a savepoint and it commits with the other turns of its batch.
        """
        if self.groups is not None:
            async with _unavailable_as_error(), self.groups.turn() as batch:
                writing = Writing(batch.conn, batch.pending)
                yield writing
        else:
            async with _unavailable_as_error(), self._engines.write.begin() as conn:
                writing = Writing(conn, [])
                yield writing
                committed = await self.ledger.append_pending(conn, writing.pending)
            committed()
        if writing.wrote_events:
            self.outbox.notify()

    async def write_statement(self, statement: Executable, parameters: Any = None) -> None:
        """One statement that is a whole write transaction (no ledger entry), durable on return.

        On SQLite it is a turn in the group commit like any write; on PostgreSQL a single round trip in
        autocommit, where one statement is its own transaction, instead of `BEGIN`, it and `COMMIT`.
        """
        if self.groups is not None:
            async with self.write_transaction() as conn:
                await conn.execute(statement, parameters)
            return
        async with _unavailable_as_error(), self._engines.read.connect() as conn:  # autocommit
            await conn.execute(statement, parameters)

    async def _append_queued(self, batch: Batch) -> None:
        batch.after_commit.append(await self.ledger.append_pending(batch.conn, batch.pending))

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[Executes]:
        """A reader for short reads; each statement sees one consistent snapshot. On SQLite it runs
        inline on this thread (point reads take microseconds): use `scan_connection` for long scans."""
        if self._engines.inline_read is None:
            async with _unavailable_as_error(), self._engines.read.connect() as conn:
                yield conn
            return
        async with _unavailable_as_error():
            if self._reader is None or self._reader.closed:
                self._reader = self._engines.inline_read.connect()
            yield InlineConnection(self._reader)

    @asynccontextmanager
    async def scan_connection(self) -> AsyncIterator[Executes]:
        """A reader for reads that may take long (whole-log scans, sums): off the event loop's thread."""
        async with _unavailable_as_error(), self._engines.read.connect() as conn:
            yield conn

    def insert(self, table: sa.Table) -> Any:
        """An INSERT in the backend's dialect, which supports `on_conflict_do_nothing`."""
        dialect = postgresql if self.backend == "postgresql" else sqlite
        return dialect.insert(table)

    # payments and budgets

    @asynccontextmanager
    async def spend_transaction(self, tenant_id: str) -> AsyncIterator[SqlSpend]:
        async with self.write_transaction() as conn:
            yield SqlSpend(self, conn, tenant_id)

    async def get_payment(self, tenant_id: str, payment_id: str) -> Payment | None:
        return await get_payment(self, tenant_id, payment_id)

    async def list_payments(
        self, tenant_id: str, *, session_id: str | None, limit: int, after: Position | None
    ) -> Page[Payment]:
        return await list_payments(self, tenant_id, session_id=session_id, limit=limit, after=after)

    # health

    async def ping(self) -> None:
        async with self.read_connection() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def schema_revision(self) -> str | None:
        async with self.read_connection() as conn:
            try:
                return (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
            except DBAPIError as exc:
                if exc.connection_invalidated:  # not "unmigrated": the store did not answer
                    raise
                return None

    async def ensure_tenant(self, conn: Executes, tenant_id: str, *, at: datetime) -> None:
        """Create the tenant in the caller's transaction unless it exists."""
        await conn.execute(
            self.insert(tenants)
            .values(tenant_id=tenant_id, created_at=at)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )

    # idempotency

    async def claim_idempotency(
        self, conn: Executes, tenant_id: str, claim: IdempotencyClaim, resource_id: str, at: datetime
    ) -> str | None:
        """Claim `claim.key` for `resource_id` inside the caller's transaction.

        Returns None when the claim is new (the caller goes on to create the resource, and both commit
        together), or the id of the resource an identical earlier request created. On PostgreSQL a
        concurrent duplicate blocks on the key's row until the first transaction ends.
        """
        inserted = await conn.execute(
            self.insert(idempotency_keys)
            .values(
                tenant_id=tenant_id,
                key=claim.key,
                fingerprint=claim.fingerprint,
                resource_id=resource_id,
                created_at=at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        )
        if inserted.rowcount == 1:
            return None
        row = (
            await conn.execute(
                sa.select(idempotency_keys.c.fingerprint, idempotency_keys.c.resource_id).where(
                    idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == claim.key
                )
            )
        ).one()
        if row.fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request; use a new key"
            )
        return str(row.resource_id)

    # keys

    async def bootstrap_tenant(self, key: ApiKey, *, key_hash: str) -> bool:
        async with self.write_transaction() as conn:
            created = await conn.execute(
                self.insert(tenants)
                .values(tenant_id=key.tenant_id, created_at=key.created_at)
                .on_conflict_do_nothing(index_elements=["tenant_id"])
            )
            if created.rowcount != 1:
                return False
            await conn.execute(sa.insert(api_keys).values(**key_row(key, key_hash)))
            return True

    async def insert_key(
        self, key: ApiKey, *, key_hash: str, idempotency: IdempotencyClaim | None = None
    ) -> Outcome[ApiKey]:
        async with self.write_transaction() as conn:
            await self.ensure_tenant(conn, key.tenant_id, at=key.created_at)
            prior = None
            if idempotency is not None:
                prior = await self.claim_idempotency(
                    conn, key.tenant_id, idempotency, key.prefix, key.created_at
                )
            if prior is None:
                await conn.execute(sa.insert(api_keys).values(**key_row(key, key_hash)))
                return Outcome(key)
            row = (
                await conn.execute(
                    sa.select(api_keys).where(
                        api_keys.c.tenant_id == key.tenant_id, api_keys.c.prefix == prior
                    )
                )
            ).one()
            return Outcome(key_from_row(row), replayed=True)

    async def find_key(self, prefix: str) -> tuple[ApiKey, str] | None:
        async with self.read_connection() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix))).first()
        return None if row is None else (key_from_row(row), row.key_hash)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        async with self.read_connection() as conn:
            rows = await conn.execute(
                sa.select(api_keys)
                .where(api_keys.c.tenant_id == tenant_id)
                .order_by(api_keys.c.created_at, api_keys.c.prefix)
            )
            return [key_from_row(row) for row in rows]

    async def revoke_key(self, tenant_id: str, prefix: str, *, at: datetime) -> ApiKey | None:
        where = (api_keys.c.tenant_id == tenant_id, api_keys.c.prefix == prefix)
        async with self.write_transaction() as conn:
            await conn.execute(
                sa.update(api_keys).where(*where, api_keys.c.revoked_at.is_(None)).values(revoked_at=at)
            )
            row = (await conn.execute(sa.select(api_keys).where(*where))).first()
        return None if row is None else key_from_row(row)

    # sessions

    async def insert_session(
        self, session: Session, *, idempotency: IdempotencyClaim | None = None
    ) -> Outcome[Session]:
        if idempotency is None:
            await self.write_statement(sa.insert(sessions), session_row(session))
            return Outcome(session)
        async with self.write_transaction() as conn:
            prior = await self.claim_idempotency(
                conn, session.tenant_id, idempotency, session.session_id, session.created_at
            )
            if prior is None:
                await conn.execute(sa.insert(sessions), session_row(session))
                return Outcome(session)
            row = (
                await conn.execute(
                    sa.select(sessions).where(
                        sessions.c.tenant_id == session.tenant_id, sessions.c.session_id == prior
                    )
                )
            ).one()
            return Outcome(session_from_row(row), replayed=True)

    async def get_session(self, tenant_id: str, session_id: str) -> Session | None:
        async with self.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(sessions).where(
                        sessions.c.tenant_id == tenant_id, sessions.c.session_id == session_id
                    )
                )
            ).first()
        return None if row is None else session_from_row(row)

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        agent_id: str | None,
        active: bool | None,
        now: datetime,
        limit: int,
        after: Position | None,
    ) -> Page[Session]:
        query = sa.select(sessions).where(sessions.c.tenant_id == tenant_id)
        if agent_id is not None:
            query = query.where(sessions.c.agent_id == agent_id)
        live = sa.and_(sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)
        if active is not None:
            query = query.where(live if active else sa.not_(live))
        if after is not None:
            created, at = sessions.c.created_at, from_epoch_micros(after.sort_key)
            query = query.where(
                sa.or_(created < at, sa.and_(created == at, sessions.c.session_id < after.id))
            )
        query = query.order_by(sessions.c.created_at.desc(), sessions.c.session_id.desc()).limit(limit + 1)
        async with self.read_connection() as conn:
            rows = (await conn.execute(query)).all()
        items = [session_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = items[-1] if more else None
        position = None if last is None else Position(epoch_micros(last.created_at), last.session_id)
        return Page(items, position)

    async def revoke_session(self, tenant_id: str, session_id: str, *, at: datetime) -> Session | None:
        where = (sessions.c.tenant_id == tenant_id, sessions.c.session_id == session_id)
        async with self.write_transaction() as conn:
            revoked = await conn.execute(
                sa.update(sessions).where(*where, sessions.c.revoked_at.is_(None)).values(revoked_at=at)
            )
            row = (await conn.execute(sa.select(sessions).where(*where))).first()
            if revoked.rowcount == 1 and row is not None:
                await record_event(
                    conn, tenant_id, SESSION_REVOKED, session_revoked_data(session_from_row(row)), at=at
                )
        return None if row is None else session_from_row(row)


@asynccontextmanager
async def _unavailable_as_error() -> AsyncIterator[None]:
    try:
        yield
    except (DBAPIError, OSError, ConnectionError) as exc:
        # A dropped connection (the pool has invalidated it, and the next checkout reconnects), a driver
        # that could not reach the server, or a server that refuses connections (its database gone, shut
        # down, out of connections); anything else the database said is a bug to surface.
        if isinstance(exc, DBAPIError) and not (
            exc.connection_invalidated or isinstance(exc, OperationalError) or _refused(exc)
        ):
            raise
        raise StoreUnavailable(
            f"the store did not answer ({type(exc).__name__}): check HALDIR_DATABASE_URL and the server"
        ) from exc


# SQLSTATEs of a PostgreSQL server that cannot serve this connection: connection exceptions (08), no such
# database (3D000), authentication (28), shutting down or starting (57P), out of resources (53).
_UNAVAILABLE_STATES = ("08", "3D000", "28", "57P", "53")


def _refused(exc: DBAPIError) -> bool:
    cause: BaseException | None = exc.orig
    while cause is not None:
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state.startswith(_UNAVAILABLE_STATES)
        cause = cause.__cause__
    return False


def _changes(engines: Engines, data_dir: Path | None, *, notify: Notify) -> Changes:
    if engines.database is not None:  # SQLite: every process of the database shares the file beside it
        return Changes(ChangeCounter(counter_path(engines.database)))
    counter = ChangeCounter(data_dir / "changes") if data_dir is not None else LocalCounter()
    url = engines.write.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return Changes(counter, notify=notify, listen_url=url)
