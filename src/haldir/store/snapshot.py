"""Online copies of a SQLite store, and the facts a backup's manifest records about a copy: each tenant's
ledger size and root, the pinned log key and the Vault's master key versions."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from haldir.core import merkle
from haldir.store.schema import ledger_heads, log_keys
from haldir.store.sql import SqlStore

_BUSY_MS = 30_000  # a copy waits this long for a writer's checkpoint, as a server's writer would


@dataclass(frozen=True)
class LogHead:
    tenant_id: str
    tree_size: int
    root_hash: bytes


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy the database at `source` into the new file `target` (0600) with SQLite's online backup API,
    in one step: the whole copy is read under one read transaction, so it is one consistent snapshot of
    committed data while servers keep writing (in WAL mode a reader never blocks a writer)."""
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(descriptor)
    src = sqlite3.connect(source, timeout=_BUSY_MS / 1000)
    try:
        src.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: every page in a single step
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
    finally:
        src.close()


async def log_heads(store: SqlStore) -> list[LogHead]:
    """Every tenant's ledger size and Merkle root, in tenant order."""
    async with store.read_connection() as conn:
        rows = (await conn.execute(sa.select(ledger_heads.c.tenant_id, ledger_heads.c.size))).all()
    heads = []
    for tenant_id, size in sorted((str(t), int(s)) for t, s in rows):
        nodes = await store.ledger.nodes(tenant_id, set(merkle.range_nodes(0, size)))
        heads.append(LogHead(tenant_id, size, merkle.root(size, nodes)))
    return heads


async def pinned_log_key(store: SqlStore) -> str | None:
    """The verifier key this deployment's checkpoints are signed with, as the first signer pinned it."""
    async with store.read_connection() as conn:
        found = (await conn.execute(sa.select(log_keys.c.vkey).where(log_keys.c.tenant_id == "*"))).scalar()
    return None if found is None else str(found)
