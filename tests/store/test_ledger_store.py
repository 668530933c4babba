"""The ledger store on both backends: concurrent appends stay contiguous, linked and provable."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest

from haldir.core import merkle
from haldir.core.keys import ApiKey, generate_key
from haldir.core.ledger import GENESIS, EntryDraft, draft_entry, hash_entry
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 4, 5, 19, 0, tzinfo=UTC)


def entry(tenant: str, n: int) -> EntryDraft:
    return draft_entry(
        entry_id=f"aud_{n}",
        tenant_id=tenant,
        session_id="ses_1",
        agent_id="agent",
        tool="stripe",
        action="charge",
        status="ok",
        cost_usd="0.000001",
        details={"n": n},
        timestamp=T0,
    )


async def _tenants(store: SqlStore, *names: str) -> None:
    for name in names:
        new = generate_key()
        key = ApiKey(tenant_id=name, prefix=new.prefix, name="k", scopes=frozenset({"*"}), created_at=T0)
        await store.insert_key(key, key_hash=new.hash)


async def test_concurrent_appends_form_one_contiguous_chain_per_tenant(store: SqlStore) -> None:
    await _tenants(store, "acme", "globex")
    results = []

    async def append(tenant: str, n: int) -> None:
        results.append(await store.ledger.append(entry(tenant, n)))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(120):
                tg.start_soon(append, "acme" if n % 3 else "globex", n)

    for tenant, count in (("acme", 80), ("globex", 40)):
        scanned = [e async for e in store.ledger.scan(tenant, chunk=7)]
        assert [e.leaf_index for e in scanned] == list(range(count))
        assert await store.ledger.size(tenant) == count
        prev = GENESIS
        for stored in scanned:
            assert stored.prev_hash == prev
            assert stored.leaf_hash == merkle.leaf_hash(stored.record_text.encode())
            assert stored.entry_hash == hash_entry(prev, stored.leaf_hash)
            prev = stored.entry_hash
        leaves = [e.leaf_hash for e in scanned]
        nodes = await store.ledger.nodes(tenant, set(merkle.range_nodes(0, count)))
        expected = merkle.root(count, {**nodes})
        rebuilt: dict[merkle.NodeId, bytes] = {}
        for index, leaf in enumerate(leaves):
            rebuilt.update(merkle.completed_nodes(index, leaf, get=rebuilt.__getitem__))
        assert merkle.root(count, rebuilt) == expected


async def test_every_stored_proof_verifies_against_the_stored_root(store: SqlStore) -> None:
    await _tenants(store, "acme")
    for n in range(37):
        await store.ledger.append(entry("acme", n))
    size = 37
    root = merkle.root(size, await store.ledger.nodes("acme", set(merkle.range_nodes(0, size))))
    scanned = [e async for e in store.ledger.scan("acme")]
    for stored in scanned:
        ranges = merkle.inclusion_ranges(stored.leaf_index, size)
        nodes = await store.ledger.nodes("acme", merkle.nodes_for(ranges))
        proof = merkle.inclusion_proof(stored.leaf_index, size, nodes=nodes)
        merkle.verify_inclusion(
            leaf_hash=stored.leaf_hash, index=stored.leaf_index, size=size, proof=proof, root=root
        )
