"""Fixtures: stores on SQLite and PostgreSQL, a governor on a fake clock, and the app in-process."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import hypothesis
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from haldir.core.keys import Principal
from haldir.core.vault import generate_master_key
from haldir.governor import Governor
from haldir.governor.keyring import MasterKeyring
from haldir.http.app import create_app
from haldir.logging import configure_logging
from haldir.runtime import wire
from haldir.settings import Settings
from haldir.store.migrate import upgrade
from haldir.store.schema import metadata
from haldir.store.sql import SqlStore
from tests.support import FakeClock

BACKENDS = ["sqlite", "postgresql"]

# No per-example deadline: timing depends on the machine's load, and tests never assert on wall-clock time.
hypothesis.settings.register_profile("haldir", deadline=None, print_blob=True)
hypothesis.settings.load_profile("haldir")


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`haldir login` writes to the user's config dir: each test (and every process it starts) gets its
    own, so neither a developer's login nor another test's can change what a command does."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _postgres_base() -> str:
    url = os.environ.get("HALDIR_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HALDIR_TEST_POSTGRES_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("HALDIR_TEST_POSTGRES_URL is not set")
    return url


async def _admin(base: str, *statements: str) -> None:
    conn = await asyncpg.connect(base)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    store = SqlStore.open(url, pool_size=1)
    try:
        await upgrade(store)
    finally:
        await store.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated database for the session's PostgreSQL tests, dropped at the end."""
    base = _postgres_base()
    name = f"haldir_t_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {base} is not reachable: {exc}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class ScratchDatabase:
    """A PostgreSQL database of one test's own, which the test may take away (`drop`)."""

    url: str
    drop: Callable[[], None]


@contextmanager
def _scratch_database() -> Iterator[ScratchDatabase]:
    """An empty database of its own, dropped afterwards; a PostgreSQL that is down fails, never skips."""
    base = _postgres_base()
    name = f"haldir_s_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {base} is not reachable: {exc}")

    def drop() -> None:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    yield ScratchDatabase(make_url(base).set(database=name).render_as_string(hide_password=False), drop)
    drop()


@pytest.fixture
def scratch_postgres() -> Iterator[ScratchDatabase]:
    with _scratch_database() as database:
        yield database


@pytest.fixture(scope="module")
def module_postgres() -> Iterator[ScratchDatabase]:
    """A scratch database shared by one test module's tests (real servers started once for them all)."""
    with _scratch_database() as database:
        yield database


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's migrated PostgreSQL database, emptied for this test (far faster than a new one)."""
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    asyncio.run(_admin(postgres_database, f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return postgres_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file for one test."""
    url = f"sqlite:///{tmp_path / 'haldir.db'}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """A migrated store URL, once per backend."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    opened = SqlStore.open(store_url, pool_size=5)
    yield opened
    await opened.close()


@pytest.fixture
def keyring() -> MasterKeyring:
    """The `governor` fixture's Vault master key."""
    return MasterKeyring([generate_master_key()], source="the test keyring")


@pytest.fixture
async def governor(store: SqlStore, clock: FakeClock, keyring: MasterKeyring) -> Governor:
    """A governor over the store, with a Vault master key; tenant `acme` may run stdio upstreams."""
    built = wire(
        store=store,
        clock=clock,
        custom_scopes=frozenset({"stripe"}),
        master_keys=keyring,
        stdio_tenants=frozenset({"acme"}),  # the tests' tenant registers stdio upstreams
    )
    await built.vault.verify_vault_keys()
    return built


@dataclass
class Api:
    """The app in-process, with an admin key of tenant `acme` and helpers to make more keys."""

    app: FastAPI
    client: httpx.AsyncClient
    governor: Governor
    clock: FakeClock
    admin_key: str

    async def key(self, *scopes: str, tenant: str = "acme") -> str:
        created = await self.governor.keys.create_key(
            Principal.operator(tenant), name="test", scopes=list(scopes)
        )
        assert created.value.value is not None
        return created.value.value

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api(store_url: str, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path, database_url=store_url, custom_scopes=("stripe",), stdio_tenants=("acme",)
    )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        governor: Governor = app.state.governor
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            api = Api(app=app, client=client, governor=governor, clock=clock, admin_key="")
            api.admin_key = await api.key("*")
            yield api


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Everything Haldir logs during the test, as the JSON lines a server would write."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="info", json=True, stream=stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
