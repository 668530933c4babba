"""Appends from several OS processes on one database leave one contiguous, verifying log per tenant."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from haldir.core import merkle
from haldir.core.keys import ApiKey, Principal, generate_key
from haldir.core.ledger import GENESIS, canonical_bytes, verify_entry
from haldir.core.usage import day_number
from haldir.runtime import wire
from haldir.store.schema import merkle_nodes
from haldir.store.sql import SqlStore
from tests.store import ledger_worker
from tests.store.processes import run_workers
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

TENANT = "acme"
TASKS_PER_PROCESS = 50  # enough waiters that each process's group commit really forms batches


async def test_2000_appends_from_4_processes_on_postgresql_leave_one_contiguous_verifying_log(
    postgres_url: str, tmp_path: Path
) -> None:
    await _appends_from_processes(postgres_url, tmp_path, processes=4, per_process=500)


async def test_400_appends_from_2_processes_on_sqlite_leave_one_contiguous_verifying_log(
    sqlite_url: str, tmp_path: Path
) -> None:
    await _appends_from_processes(sqlite_url, tmp_path, processes=2, per_process=200)


async def _appends_from_processes(url: str, tmp_path: Path, *, processes: int, per_process: int) -> None:
    store = SqlStore.open(url, pool_size=2)
    try:
        new = generate_key()
        key = ApiKey(
            tenant_id=TENANT,
            prefix=new.prefix,
            name="k",
            scopes=frozenset({"*"}),
            created_at=ledger_worker.T0,
        )
        await store.insert_key(key, key_hash=new.hash)
        placed = await _run_workers(url, tmp_path, processes=processes, per_process=per_process)
        await _require_one_verifying_log(store, placed, per_process=per_process)
    finally:
        await store.close()


async def _run_workers(url: str, tmp_path: Path, *, processes: int, per_process: int) -> list[dict[str, int]]:
    """Start the workers, let them all go at once, and return each one's entry id → leaf index."""
    commands = [
        ["tests.store.ledger_worker", url, TENANT, str(number), str(per_process), str(TASKS_PER_PROCESS)]
        for number in range(processes)
    ]
    return [json.loads(output) for output in await run_workers(commands, tmp_path)]


async def _require_one_verifying_log(
    store: SqlStore, placed: list[dict[str, int]], *, per_process: int
) -> None:
    total = len(placed) * per_process
    entries = [entry async for entry in store.ledger.scan(TENANT)]

    # Exactly `total` entries at leaf indexes 0..total-1, and the head agrees.
    assert [entry.leaf_index for entry in entries] == list(range(total))
    assert await store.ledger.size(TENANT) == total

    # Every entry of every process is there exactly once, at the index its process was told.
    expected = Counter(ledger_worker.entry_id(w, n) for w in range(len(placed)) for n in range(per_process))
    assert Counter(entry.entry_id for entry in entries) == expected
    for worker, mine in enumerate(placed):
        assert len(mine) == per_process
        for appended, leaf_index in mine.items():
            assert appended.startswith(f"aud_w{worker}n")
            assert entries[leaf_index].entry_id == appended

    # Each record is stored canonical, hashes to its leaf and links to the entry before.
    prev, builder = GENESIS, merkle.RootBuilder()
    for entry in entries:
        assert canonical_bytes(entry.record) == entry.record_text.encode()
        assert entry.leaf_hash == merkle.leaf_hash(entry.record_text.encode())
        verify_entry(
            entry.record,
            leaf_index=entry.leaf_index,
            leaf_hash=entry.leaf_hash,
            prev_hash=entry.prev_hash,
            entry_hash=entry.entry_hash,
            expected_prev=prev,
            expected_index=builder.size,
        )
        builder.push(entry.leaf_hash)
        prev = entry.entry_hash

    # The stored Merkle nodes are exactly the complete subtrees of these leaves, so the roots agree.
    rebuilt: dict[merkle.NodeId, bytes] = {}
    for entry in entries:
        rebuilt.update(merkle.completed_nodes(entry.leaf_index, entry.leaf_hash, get=rebuilt.__getitem__))
    c = merkle_nodes.c
    async with store.read_connection() as conn:
        rows = await conn.execute(sa.select(c.level, c.idx, c.hash).where(c.tenant_id == TENANT))
        stored = {merkle.NodeId(row.level, row.idx): bytes(row.hash) for row in rows}
    assert stored == rebuilt
    assert merkle.root(total, stored) == builder.root()

    # And the governor's own whole-log verification agrees.
    governor = wire(store=store, clock=FakeClock())
    verification = await governor.ledger.verify_log(Principal.operator(TENANT))
    assert (verification.ok, verification.tree_size, verification.first_bad) == (True, total, None)

    # The usage counters, updated in each appending transaction, count every entry once.
    day = day_number(entries[0].columns["created_at"])
    rows = await store.usage.days(TENANT, first=day - 1, last=day + 1)
    by_agent = Counter(entry.columns["agent_id"] for entry in entries)
    assert {agent: counts.actions for _, agent, counts in rows} == by_agent
