"""Each process remembers its sessions' latest ledger entries, and reads what other processes appended since
it last looked: anomaly detection judges an entry on the whole ledger, whichever process appended it.

Two `SqlStore` objects on one SQLite file stand for two worker processes: each has its own group commit
(taking turns through the writer lock) and its own memory of recent entries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from haldir.core.anomalies import BURST_MAX_ACTIONS
from haldir.core.keys import ApiKey, generate_key
from haldir.core.ledger import EntryDraft, StoredEntry, draft_entry
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 4, 5, 19, 0, tzinfo=UTC)
TENANT = "acme"
SESSION = "ses_burst"


def _entry(n: int) -> EntryDraft:
    """The session's n-th action, a quarter second after the one before: all within the burst window."""
    return draft_entry(
        entry_id=f"aud_{n}",
        tenant_id=TENANT,
        session_id=SESSION,
        agent_id="agent",
        tool="search",
        action="query",
        status="ok",
        cost_usd="0",
        details={"n": n},
        timestamp=T0 + timedelta(seconds=n / 4),
    )


@pytest.fixture
async def stores(sqlite_url: str) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    first, second = SqlStore.open(sqlite_url, pool_size=2), SqlStore.open(sqlite_url, pool_size=2)
    new = generate_key()
    key = ApiKey(tenant_id=TENANT, prefix=new.prefix, name="k", scopes=frozenset({"*"}), created_at=T0)
    await first.insert_key(key, key_hash=new.hash)
    yield first, second
    await first.close()
    await second.close()


def _burst_flags(entries: list[StoredEntry]) -> list[int]:
    """The positions of the entries flagged as a burst."""
    return [
        n
        for n, entry in enumerate(entries)
        if entry.record["flagged"] and str(entry.record["flag_reason"]).startswith("burst")
    ]


async def test_the_burst_detector_counts_the_entries_another_process_appended(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    appended = [await stores[n % 2].ledger.append(_entry(n)) for n in range(BURST_MAX_ACTIONS + 1)]

    assert [entry.leaf_index for entry in appended] == list(range(BURST_MAX_ACTIONS + 1))
    # Each store appended half of them: only counting the other's too makes the 61st a burst.
    assert _burst_flags(appended) == [BURST_MAX_ACTIONS]
    assert (
        appended[BURST_MAX_ACTIONS].record["flag_reason"]
        == f"burst: {BURST_MAX_ACTIONS + 1} actions in 20 s by this session"
    )


async def test_a_process_reads_what_others_appended_since_it_last_looked(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    first, second = stores
    # `first` remembers the session after its one entry; `second` then appends 59 it has not seen.
    appended = [await first.ledger.append(_entry(0))]
    appended += [await second.ledger.append(_entry(n)) for n in range(1, BURST_MAX_ACTIONS)]
    assert _burst_flags(appended) == []

    last = await first.ledger.append(_entry(BURST_MAX_ACTIONS))

    assert last.leaf_index == BURST_MAX_ACTIONS
    assert _burst_flags([*appended, last]) == [BURST_MAX_ACTIONS]
