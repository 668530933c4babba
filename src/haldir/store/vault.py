"""The Vault in SQL: master key versions (by check value), wrapped data keys, secrets and their
sealed versions. Every change to a secret commits together with its ledger entry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.core.idempotency import IdempotencyClaim, Outcome
from haldir.core.ledger import EntryDraft, StoredEntry
from haldir.core.secrets import SecretInfo, SecretVersion, WrappedDataKey
from haldir.errors import Conflict
from haldir.store.schema import Micros, secret_versions, secrets, vault_data_keys, vault_master_keys
from haldir.store.transaction import Executes

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore


class SqlVault:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # master keys

    async def master_keys(self) -> dict[int, str]:
        """Check value of every registered master key version."""
        async with self._store.read_connection() as conn:
            rows = await conn.execute(sa.select(vault_master_keys.c.version, vault_master_keys.c.check_value))
            return {int(row.version): row.check_value for row in rows}

    async def register_master_key(self, check_value: str, *, at: datetime) -> int:
        """The version of the master key with `check_value`, registering it as the newest if it is new."""
        c = vault_master_keys.c
        async with self._store.write_transaction() as conn:
            for _ in range(5):  # replicas registering different keys at once: the loser takes the next number
                found = (
                    await conn.execute(sa.select(c.version).where(c.check_value == check_value))
                ).scalar()
                if found is not None:
                    return int(found)
                newest = (await conn.execute(sa.select(sa.func.max(c.version)))).scalar()
                version = int(newest or 0) + 1
                inserted = await conn.execute(
                    self._store.insert(vault_master_keys)
                    .values(version=version, check_value=check_value, created_at=at)
                    .on_conflict_do_nothing()
                )
                if inserted.rowcount == 1:
                    return version
        raise RuntimeError("could not register the master key version")

    async def data_key_counts(self) -> dict[int, int]:
        """How many data keys each master key version wraps."""
        c = vault_data_keys.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(sa.select(c.master_version, sa.func.count()).group_by(c.master_version))
            return {int(version): int(count) for version, count in rows}

    async def secret_counts(self) -> tuple[int, int]:
        """How many secrets and secret versions the store holds, across tenants."""
        async with self._store.read_connection() as conn:
            names = (await conn.execute(sa.select(sa.func.count()).select_from(secrets))).scalar()
            versions = (await conn.execute(sa.select(sa.func.count()).select_from(secret_versions))).scalar()
        return int(names or 0), int(versions or 0)

    # data keys

    async def data_key(self, tenant_id: str, version: int | None = None) -> WrappedDataKey | None:
        """The tenant's data key `version`, or its newest."""
        c = vault_data_keys.c
        query = sa.select(vault_data_keys).where(c.tenant_id == tenant_id)
        query = (
            query.order_by(c.version.desc()).limit(1)
            if version is None
            else query.where(c.version == version)
        )
        async with self._store.read_connection() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _data_key(row)

    async def insert_data_key(self, key: WrappedDataKey) -> WrappedDataKey:
        """Store a new data key; when another request stored this version first, that one wins."""
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, key.tenant_id, at=key.created_at)
            await conn.execute(
                self._store.insert(vault_data_keys)
                .values(
                    tenant_id=key.tenant_id,
                    version=key.version,
                    master_version=key.master_version,
                    wrapped=key.wrapped,
                    created_at=key.created_at,
                )
                .on_conflict_do_nothing(index_elements=["tenant_id", "version"])
            )
            row = (
                await conn.execute(
                    sa.select(vault_data_keys).where(
                        vault_data_keys.c.tenant_id == key.tenant_id, vault_data_keys.c.version == key.version
                    )
                )
            ).one()
        return _data_key(row)

    async def data_keys_not_on(self, master_version: int, *, limit: int) -> list[WrappedDataKey]:
        """Data keys of any tenant still wrapped by another master key version than `master_version`."""
        c = vault_data_keys.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(vault_data_keys)
                .where(c.master_version != master_version)
                .order_by(c.tenant_id, c.version)
                .limit(limit)
            )
            return [_data_key(row) for row in rows]

    async def rewrap(self, key: WrappedDataKey, *, master_version: int, wrapped: bytes) -> bool:
        """Replace a data key's wrapping, unless it changed since `key` was read."""
        c = vault_data_keys.c
        async with self._store.write_transaction() as conn:
            updated = await conn.execute(
                sa.update(vault_data_keys)
                .where(
                    c.tenant_id == key.tenant_id,
                    c.version == key.version,
                    c.master_version == key.master_version,
                    c.wrapped == key.wrapped,
                )
                .values(master_version=master_version, wrapped=wrapped)
            )
            return bool(updated.rowcount == 1)

    # secrets

    async def latest_version(self, tenant_id: str, name: str) -> int:
        """The newest version number of a secret, 0 when there is none."""
        async with self._store.read_connection() as conn:
            found = (
                await conn.execute(
                    sa.select(secrets.c.latest_version).where(
                        secrets.c.tenant_id == tenant_id, secrets.c.name == name
                    )
                )
            ).scalar()
        return int(found or 0)

    async def secret_version(self, tenant_id: str, name: str, version: int | None) -> SecretVersion | None:
        """Version `version` of a secret, or its newest."""
        c = secret_versions.c
        query = sa.select(secret_versions).where(c.tenant_id == tenant_id, c.name == name)
        query = (
            query.order_by(c.version.desc()).limit(1)
            if version is None
            else query.where(c.version == version)
        )
        async with self._store.read_connection() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _secret_version(row)

    async def insert_secret(
        self,
        tenant_id: str,
        name: str,
        *,
        created_at: datetime,
        seal: Callable[[int], SecretVersion],
        entry: Callable[[SecretVersion], EntryDraft],
        idempotency: IdempotencyClaim | None,
    ) -> Outcome[SecretVersion] | None:
        """Store the next version of `name` with its ledger entry: `seal` makes the version for its number,
        read inside the transaction. None when a concurrent transaction took that number first (on
        PostgreSQL; the caller tries again). A replayed claim returns the earlier version."""
        try:
            return await self._insert_secret(
                tenant_id, name, created_at=created_at, seal=seal, entry=entry, idempotency=idempotency
            )
        except _VersionTaken:  # raised inside the transaction, so nothing of it committed
            return None

    async def _insert_secret(
        self,
        tenant_id: str,
        name: str,
        *,
        created_at: datetime,
        seal: Callable[[int], SecretVersion],
        entry: Callable[[SecretVersion], EntryDraft],
        idempotency: IdempotencyClaim | None,
    ) -> Outcome[SecretVersion]:
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, tenant_id, at=created_at)
            latest = (
                await conn.execute(
                    sa.select(secrets.c.latest_version).where(
                        secrets.c.tenant_id == tenant_id, secrets.c.name == name
                    )
                )
            ).scalar()
            secret = seal(int(latest or 0) + 1)
            if idempotency is not None:
                prior = await self._store.claim_idempotency(
                    conn, secret.tenant_id, idempotency, f"{secret.version}:{secret.name}", secret.created_at
                )
                if prior is not None:
                    version, _, name = prior.partition(":")
                    row = (
                        await conn.execute(
                            sa.select(secret_versions).where(
                                secret_versions.c.tenant_id == secret.tenant_id,
                                secret_versions.c.name == name,
                                secret_versions.c.version == int(version),
                            )
                        )
                    ).first()
                    if row is None:
                        raise Conflict(
                            f"the secret this Idempotency-Key stored ({name} v{version}) was deleted since"
                        )
                    return Outcome(_secret_version(row), replayed=True)
            inserted = await conn.execute(
                self._store.insert(secret_versions)
                .values(**_secret_version_row(secret))
                .on_conflict_do_nothing(index_elements=["tenant_id", "name", "version"])
            )
            if inserted.rowcount != 1:
                raise _VersionTaken
            await conn.execute(
                self._store.insert(secrets)
                .values(
                    tenant_id=secret.tenant_id,
                    name=secret.name,
                    latest_version=secret.version,
                    access_count=0,
                    created_at=secret.created_at,
                    updated_at=secret.created_at,
                )
                .on_conflict_do_update(
                    index_elements=["tenant_id", "name"],
                    set_={"latest_version": secret.version, "updated_at": secret.created_at},
                )
            )
            conn.append(entry(secret))
        return Outcome(secret)

    async def record_release(
        self, tenant_id: str, name: str, *, at: datetime, entry: EntryDraft
    ) -> StoredEntry:
        """Count a release of the secret and append its ledger entry; both commit in one group commit."""

        return await self._store.ledger.append(entry, change=SecretReleased(tenant_id, name, at))

    async def delete_secret(self, tenant_id: str, name: str, *, entry: EntryDraft) -> int:
        """Delete every version of a secret and append `entry`; the number of versions deleted (0: none,
        and nothing is appended)."""
        async with self._store.write_transaction() as conn:
            deleted = await conn.execute(
                sa.delete(secret_versions).where(
                    secret_versions.c.tenant_id == tenant_id, secret_versions.c.name == name
                )
            )
            await conn.execute(
                sa.delete(secrets).where(secrets.c.tenant_id == tenant_id, secrets.c.name == name)
            )
            count = int(deleted.rowcount)
            if count:
                conn.append(entry)
        return count

    async def list_secrets(self, tenant_id: str, *, limit: int, after: str | None) -> list[SecretInfo]:
        """Secrets by name, `limit` of them after the name `after`."""
        query = _infos(tenant_id).order_by(secrets.c.name).limit(limit)
        if after is not None:
            query = query.where(secrets.c.name > after)
        async with self._store.read_connection() as conn:
            return [_info(row) for row in await conn.execute(query)]

    async def secret_info(self, tenant_id: str, name: str) -> SecretInfo | None:
        async with self._store.read_connection() as conn:
            row = (await conn.execute(_infos(tenant_id).where(secrets.c.name == name))).first()
        return None if row is None else _info(row)


def _infos(tenant_id: str) -> sa.Select[Any]:
    """The tenant's secrets with their number of versions and the latest version's scope_required."""
    s, latest, counted = secrets.c, secret_versions.c, secret_versions.alias("counted").c
    versions = (
        sa.select(sa.func.count())
        .where(counted.tenant_id == s.tenant_id, counted.name == s.name)
        .scalar_subquery()
        .label("versions")
    )
    return (
        sa.select(secrets, versions, latest.scope_required)
        .join(
            secret_versions,
            sa.and_(
                latest.tenant_id == s.tenant_id, latest.name == s.name, latest.version == s.latest_version
            ),
        )
        .where(s.tenant_id == tenant_id)
    )


# Built once: constructing a statement costs more than running it, and this one runs on every commit
# that releases a secret.
COUNT_RELEASES = (
    sa.update(secrets)
    .where(secrets.c.tenant_id == sa.bindparam("p_tenant"), secrets.c.name == sa.bindparam("p_name"))
    .values(
        access_count=secrets.c.access_count + sa.bindparam("p_times"),
        last_accessed_at=sa.bindparam("p_at", type_=Micros()),
    )
)


@dataclass(frozen=True)
class SecretReleased:
    """A release of one secret, to be counted: the releases of one commit update its row once."""

    tenant_id: str
    name: str
    at: datetime

    @property
    def key(self) -> tuple[str, ...]:
        return ("secrets", self.tenant_id, self.name)

    async def run(self, conn: Executes, alike: Sequence[SecretReleased]) -> None:
        last = max(release.at for release in alike)
        parameters = {"p_tenant": self.tenant_id, "p_name": self.name, "p_times": len(alike), "p_at": last}
        await conn.execute(COUNT_RELEASES, parameters)


class _VersionTaken(Exception):
    pass


def _data_key(row: sa.Row[Any]) -> WrappedDataKey:
    return WrappedDataKey(
        tenant_id=row.tenant_id,
        version=int(row.version),
        master_version=int(row.master_version),
        wrapped=bytes(row.wrapped),
        created_at=row.created_at,
    )


def _secret_version_row(secret: SecretVersion) -> dict[str, Any]:
    return {
        "tenant_id": secret.tenant_id,
        "name": secret.name,
        "version": secret.version,
        "scope_required": secret.scope_required,
        "data_key_version": secret.data_key_version,
        "sealed": secret.sealed,
        "value_digest": secret.value_digest,
        "created_at": secret.created_at,
    }


def _secret_version(row: sa.Row[Any]) -> SecretVersion:
    return SecretVersion(
        tenant_id=row.tenant_id,
        name=row.name,
        version=int(row.version),
        scope_required=row.scope_required,
        data_key_version=int(row.data_key_version),
        sealed=bytes(row.sealed),
        value_digest=row.value_digest,
        created_at=row.created_at,
    )


def _info(row: sa.Row[Any]) -> SecretInfo:
    return SecretInfo(
        name=row.name,
        latest_version=int(row.latest_version),
        versions=int(row.versions),
        scope_required=row.scope_required,
        access_count=int(row.access_count),
        last_accessed_at=row.last_accessed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
