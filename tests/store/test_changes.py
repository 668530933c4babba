"""The change counter and the caches it invalidates: shared by the processes of a machine through a file,
moved by PostgreSQL notifications from other replicas, and no cache at all while changes cannot be heard."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import asyncpg
import pytest
from anyio.abc import TaskGroup

from haldir.cache import Cache
from haldir.store.changes import ChangeCounter, Changes, LocalCounter, counter_path
from haldir.store.sql import SqlStore

WAIT_S = 10  # a bound on every wait for a listener to connect or notice a loss
DELIVERY_S = 2  # a bound on a notification's delivery to another replica (the documented target: 1 s)


# the counter


def test_a_bump_on_one_counter_is_read_by_another_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "haldir.db-changes"
    first, second = ChangeCounter(path), ChangeCounter(path)
    try:
        assert first.read() == second.read() == 0
        assert first.bump() == 1
        assert second.read() == 1
        assert second.bump() == 2
        assert first.read() == 2
        assert ChangeCounter(path).read() == 2  # one more process opening it later sees the same
    finally:
        first.close()
        second.close()


def test_the_counter_file_is_private_to_its_owner(tmp_path: Path) -> None:
    counter = ChangeCounter(tmp_path / "data" / "changes")
    try:
        assert stat.S_IMODE((tmp_path / "data" / "changes").stat().st_mode) == 0o600
    finally:
        counter.close()


def test_an_sqlite_database_keeps_its_counter_beside_it(tmp_path: Path) -> None:
    assert counter_path(tmp_path / "haldir.db") == tmp_path / "haldir.db-changes"


# the cache


class Epoch:
    """A change counter a test moves by hand; None while changes cannot be heard."""

    def __init__(self) -> None:
        self.value: int | None = 0

    def __call__(self) -> int | None:
        return self.value

    def bump(self) -> None:
        assert self.value is not None
        self.value += 1


def test_a_cached_value_is_served_until_the_counter_moves() -> None:
    epoch = Epoch()
    cache: Cache[str, str] = Cache(epoch, maxsize=8)
    cache.put("key", "principal", cache.token())
    assert cache.get("key") == "principal"
    epoch.bump()
    assert cache.get("key") is None
    assert len(cache) == 0


def test_a_value_read_before_a_change_is_not_kept() -> None:
    epoch = Epoch()
    cache: Cache[str, str] = Cache(epoch, maxsize=8)
    token = cache.token()  # taken before reading the store ...
    epoch.bump()  # ... a change commits while the read is under way ...
    cache.put("key", "stale", token)  # ... so what was read may be older than the change
    assert cache.get("key") is None
    cache.put("key", "fresh", cache.token())
    assert cache.get("key") == "fresh"


@pytest.mark.anyio
async def test_read_through_loads_once_keeps_no_none_and_nothing_loaded_across_a_change() -> None:
    epoch = Epoch()
    cache: Cache[str, str] = Cache(epoch, maxsize=8)
    loads: list[str] = []

    async def load(value: str | None, *, change: bool = False) -> str | None:
        loads.append(str(value))
        if change:
            epoch.bump()  # a change commits while the store is read
        return value

    assert await cache.read_through("key", lambda: load("stored")) == "stored"
    assert await cache.read_through("key", lambda: load("not read")) == "stored"
    assert await cache.read_through("missing", lambda: load(None)) is None
    assert await cache.read_through("missing", lambda: load(None)) is None
    assert loads == ["stored", "None", "None"]  # a hit is not loaded; a miss is not remembered
    epoch.bump()
    assert await cache.read_through("key", lambda: load("read during a change", change=True)) == (
        "read during a change"
    )
    assert cache.get("key") is None


def test_nothing_is_cached_or_served_while_changes_cannot_be_heard() -> None:
    epoch = Epoch()
    cache: Cache[str, str] = Cache(epoch, maxsize=8)
    cache.put("key", "principal", cache.token())
    epoch.value = None
    assert cache.get("key") is None
    cache.put("other", "principal", cache.token())
    assert cache.get("other") is None
    epoch.value = 5
    assert cache.get("key") is None  # listening again: what was cached before is not trusted
    assert cache.get("other") is None


def test_the_oldest_value_is_dropped_when_the_cache_is_full() -> None:
    cache: Cache[int, str] = Cache(Epoch(), maxsize=3)
    for n in range(3):
        cache.put(n, f"v{n}", cache.token())
    cache.put(1, "v1 again", cache.token())  # replacing a value does not make room
    assert len(cache) == 3
    cache.put(3, "v3", cache.token())
    assert len(cache) == 3
    assert cache.get(0) is None
    assert [cache.get(n) for n in (1, 2, 3)] == ["v1 again", "v2", "v3"]


# PostgreSQL: listening for other replicas


async def _until(condition: Callable[[], bool], what: str, *, within: float = WAIT_S) -> None:
    """Poll `condition` (a background task is working towards it) for at most `within` seconds."""
    try:
        with anyio.fail_after(within):
            while True:
                if condition():
                    return
                await anyio.sleep(0.01)  # polling the listener task, not making time pass
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


@pytest.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one PostgreSQL database with counters in different data dirs: two machines."""
    first = SqlStore.open(postgres_url, pool_size=2, data_dir=tmp_path / "first")
    second = SqlStore.open(postgres_url, pool_size=2, data_dir=tmp_path / "second")
    yield first, second
    await first.close()
    await second.close()


async def _listening(tg: TaskGroup, changes: Changes) -> None:
    """`changes.listen` started as a task of `tg`, once it is connected."""
    tg.start_soon(changes.listen)
    await _until(lambda: changes.epoch() is not None, "the listener connected")


@pytest.mark.anyio
async def test_a_postgres_process_caches_nothing_until_it_listens(
    replicas: tuple[SqlStore, SqlStore],
) -> None:
    changes = replicas[0].changes
    assert changes.epoch() is None
    async with anyio.create_task_group() as tg:
        await _listening(tg, changes)
        assert isinstance(changes.epoch(), int)
        tg.cancel_scope.cancel()
    assert changes.epoch() is None  # stopped listening: nothing may be served from a cache again


async def _listener_pids(postgres_url: str, *, terminate: bool = False) -> list[int]:
    """The database's backends that listen for changes (terminated, if asked)."""
    admin = await asyncpg.connect(postgres_url)
    try:
        rows = await admin.fetch(
            "SELECT pid, CASE WHEN $1 THEN pg_terminate_backend(pid) END FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %haldir_changes%'",
            terminate,
        )
    finally:
        await admin.close()
    return sorted(row["pid"] for row in rows)


@pytest.mark.anyio
async def test_a_postgres_process_that_loses_its_listener_listens_again_and_forgets_what_it_cached(
    replicas: tuple[SqlStore, SqlStore], postgres_url: str
) -> None:
    changes = replicas[0].changes
    cache: Cache[str, str] = Cache(changes.epoch, maxsize=8)
    async with anyio.create_task_group() as tg:
        await _listening(tg, changes)
        before = changes.epoch()
        assert before is not None
        cache.put("key", "principal", cache.token())
        assert cache.get("key") == "principal"

        lost = await _listener_pids(postgres_url, terminate=True)

        assert len(lost) == 1
        # It connects again at once; what changed while nobody listened is unknown, so it starts afresh.
        moved = lambda: (epoch := changes.epoch()) is not None and epoch > before  # noqa: E731
        await _until(moved, "the listener connected again")
        assert cache.get("key") is None
        assert set(await _listener_pids(postgres_url)) - set(lost), "a new connection listens"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_change_announced_on_one_replica_moves_the_counter_of_another(
    replicas: tuple[SqlStore, SqlStore],
) -> None:
    first, second = replicas
    async with anyio.create_task_group() as tg:
        for store in replicas:
            await _listening(tg, store.changes)
        seen = second.changes.epoch()
        assert seen is not None

        await first.changes.announce()

        heard = lambda: second.changes.epoch() != seen  # noqa: E731
        await _until(heard, "the other replica heard the change", within=DELIVERY_S)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_listening_process_forgets_what_it_cached_now_and_then_in_case_a_notify_was_lost(
    postgres_url: str,
) -> None:
    changes = Changes(LocalCounter(), listen_url=postgres_url, forget_every=0.05)
    async with anyio.create_task_group() as tg:
        await _listening(tg, changes)
        cache: Cache[str, str] = Cache(changes.epoch, maxsize=8)
        cache.put("key", "revoked elsewhere, unannounced", cache.token())

        await _until(lambda: cache.get("key") is None, "the cache was emptied with nothing announced")
        assert changes.epoch() is not None  # still listening all along
        tg.cancel_scope.cancel()
