"""The Vault on both stores: sealed versions, scoped release, metadata without values, tamper detection,
and master key rotation while secrets are being released."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa

from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.core.vault import generate_master_key
from haldir.errors import InvalidRequest, NotFound, ScopeDenied, VaultSealed, VaultTampered
from haldir.governor import Governor
from haldir.governor.keyring import MasterKeyring
from haldir.runtime import wire
from haldir.store.schema import secret_versions, vault_data_keys
from haldir.store.sql import SqlStore
from haldir.store.vault import SecretReleased
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")
VALUE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.fixture(autouse=True)
async def _tenants(governor: Governor) -> None:
    for tenant in ("acme", "globex"):
        await governor.keys.create_key(Principal.operator(tenant), name="setup", scopes=["*"])


async def _session(governor: Governor, *scopes: str, principal: Principal = ACME) -> str:
    created = await governor.sessions.create_session(
        principal, agent_id="agent-7", scopes=list(scopes or ["read"])
    )
    return created.value.session_id


async def _vault_records(governor: Governor, principal: Principal = ACME) -> list[dict[str, Any]]:
    page = await governor.ledger.list_entries(
        principal, where=EntryFilter(tool="vault"), limit=200, order="asc"
    )
    return [entry.record for entry in page.entries]


async def test_a_stored_secret_is_released_to_a_session_holding_its_scope(governor: Governor) -> None:
    stored = await governor.vault.store_secret(ACME, name="stripe_key", value=VALUE, scope_required="stripe")
    assert (stored.value.version, stored.value.scope_required) == (1, "stripe")
    session = await _session(governor, "stripe:refund", "stripe")
    released = await governor.vault.get_secret(ACME, "stripe_key", session_id=session)
    assert (released.name, released.version, released.value) == ("stripe_key", 1, VALUE)
    assert VALUE not in repr(released)


async def test_storing_a_name_again_makes_a_new_version_and_the_old_one_stays_readable(
    governor: Governor,
) -> None:
    await governor.vault.store_secret(ACME, name="db", value="first")
    second = await governor.vault.store_secret(ACME, name="db", value="second")
    assert second.value.version == 2
    session = await _session(governor)
    assert (await governor.vault.get_secret(ACME, "db", session_id=session)).value == "second"
    assert (await governor.vault.get_secret(ACME, "db", session_id=session, version=1)).value == "first"
    info = await governor.vault.secret_info(ACME, "db")
    assert (info.latest_version, info.versions, info.access_count) == (2, 2, 2)
    with pytest.raises(NotFound):
        await governor.vault.get_secret(ACME, "db", session_id=session, version=3)


async def test_a_session_without_the_scope_gets_nothing_and_the_denial_is_recorded(
    governor: Governor,
) -> None:
    await governor.vault.store_secret(ACME, name="stripe_key", value=VALUE, scope_required="stripe")
    session = await _session(governor, "read")
    with pytest.raises(ScopeDenied) as denied:
        await governor.vault.get_secret(ACME, "stripe_key", session_id=session)
    assert VALUE not in str(denied.value)
    assert "lacks scope 'stripe'" in denied.value.message
    store, release = await _vault_records(governor)
    assert (store["action"], store["status"]) == ("secret.store", "ok")
    assert (release["action"], release["status"], release["session_id"]) == (
        "secret.release",
        "denied",
        session,
    )
    assert release["details"]["value_hmac"] == store["details"]["value_hmac"]
    assert len(store["details"]["value_hmac"]) == 64
    assert (await governor.vault.secret_info(ACME, "stripe_key")).access_count == 0


async def test_a_revoked_or_expired_session_gets_nothing(governor: Governor, clock: FakeClock) -> None:
    await governor.vault.store_secret(ACME, name="token", value=VALUE)
    revoked = await _session(governor)
    await governor.sessions.revoke_session(ACME, revoked)
    with pytest.raises(ScopeDenied, match="revoked"):
        await governor.vault.get_secret(ACME, "token", session_id=revoked)
    expiring = await _session(governor)
    clock.advance(7200)
    with pytest.raises(ScopeDenied, match="expired"):
        await governor.vault.get_secret(ACME, "token", session_id=expiring)


async def test_the_ledger_records_store_release_and_delete_with_an_hmac_and_never_the_value(
    governor: Governor,
) -> None:
    await governor.vault.store_secret(ACME, name="token", value=VALUE)
    await governor.vault.get_secret(ACME, "token", session_id=await _session(governor))
    assert await governor.vault.delete_secret(ACME, "token") == 1
    records = await _vault_records(governor)
    assert [r["action"] for r in records] == ["secret.store", "secret.release", "secret.delete"]
    assert all(VALUE not in str(record) for record in records)
    assert len({r["details"]["value_hmac"] for r in records}) == 1
    with pytest.raises(NotFound):
        await governor.vault.secret_info(ACME, "token")
    with pytest.raises(NotFound):
        await governor.vault.delete_secret(ACME, "token")


async def test_the_value_hmac_is_keyed_per_tenant(governor: Governor) -> None:
    globex = Principal.operator("globex")
    await governor.vault.store_secret(ACME, name="shared", value=VALUE)
    await governor.vault.store_secret(globex, name="shared", value=VALUE)
    (ours,), (theirs,) = await _vault_records(governor), await _vault_records(governor, globex)
    assert ours["details"]["value_hmac"] != theirs["details"]["value_hmac"]


async def test_secrets_are_tenant_scoped(governor: Governor) -> None:
    globex = Principal.operator("globex")
    await governor.vault.store_secret(ACME, name="token", value=VALUE)
    theirs = await _session(governor, principal=globex)
    with pytest.raises(NotFound):
        await governor.vault.get_secret(globex, "token", session_id=theirs)
    with pytest.raises(NotFound):  # a session of another tenant does not exist here either
        await governor.vault.get_secret(ACME, "token", session_id=theirs)
    assert (await governor.vault.list_secrets(globex)).items == []


async def test_listing_shows_metadata_in_name_order_and_pages(governor: Governor) -> None:
    for name in ("b", "a", "c"):
        await governor.vault.store_secret(ACME, name=name, value=VALUE)
    first = await governor.vault.list_secrets(ACME, limit=2)
    assert [info.name for info in first.items] == ["a", "b"]
    from haldir.core.pagination import encode_cursor

    rest = await governor.vault.list_secrets(ACME, limit=2, cursor=encode_cursor(first.next))
    assert [info.name for info in rest.items] == ["c"]
    assert rest.next is None
    assert VALUE not in repr(first.items)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "é", "-lead", "x" * 129])
async def test_malformed_secret_names_are_refused(governor: Governor, name: str) -> None:
    with pytest.raises(InvalidRequest):
        await governor.vault.store_secret(ACME, name=name, value=VALUE)


@pytest.mark.parametrize("value", ["", "\ud800", "x" * (64 * 1024 + 1)])
async def test_empty_unencodable_or_huge_values_are_refused(governor: Governor, value: str) -> None:
    with pytest.raises(InvalidRequest):
        await governor.vault.store_secret(ACME, name="v", value=value)


async def test_a_malformed_scope_required_is_refused(governor: Governor) -> None:
    with pytest.raises(InvalidRequest):
        await governor.vault.store_secret(ACME, name="v", value=VALUE, scope_required="Stripe!")


async def test_a_ciphertext_moved_to_another_secret_does_not_open(
    governor: Governor, store: SqlStore
) -> None:
    await governor.vault.store_secret(ACME, name="a", value="value of a")
    await governor.vault.store_secret(ACME, name="b", value="value of b")
    c = secret_versions.c
    async with store.write_transaction() as conn:
        sealed_a = (await conn.execute(sa.select(c.sealed).where(c.name == "a"))).scalar_one()
        await conn.execute(sa.update(secret_versions).where(c.name == "b").values(sealed=sealed_a))
    with pytest.raises(VaultTampered, match="'b' v1"):
        await governor.vault.get_secret(ACME, "b", session_id=await _session(governor))


async def test_a_data_key_moved_to_another_tenant_does_not_open(
    governor: Governor, store: SqlStore, clock: FakeClock, keyring: MasterKeyring
) -> None:
    globex = Principal.operator("globex")
    await governor.vault.store_secret(ACME, name="a", value=VALUE)
    await governor.vault.store_secret(globex, name="a", value="theirs")
    c = vault_data_keys.c
    async with store.write_transaction() as conn:
        ours = (await conn.execute(sa.select(c.wrapped).where(c.tenant_id == "acme"))).scalar_one()
        await conn.execute(sa.update(vault_data_keys).where(c.tenant_id == "globex").values(wrapped=ours))
    fresh = wire(store=store, clock=clock, master_keys=keyring)  # nothing cached
    with pytest.raises(VaultTampered, match="globex"):
        await fresh.vault.get_secret(globex, "a", session_id=await _session(fresh, principal=globex))


async def test_a_governor_without_the_master_key_is_sealed(governor: Governor, store: SqlStore) -> None:
    await governor.vault.store_secret(ACME, name="a", value=VALUE)
    stranger = wire(
        store=store, clock=FakeClock(), master_keys=MasterKeyring([generate_master_key()], source="elsewhere")
    )
    with pytest.raises(VaultSealed, match="elsewhere"):
        await stranger.vault.get_secret(ACME, "a", session_id=await _session(stranger))
    with pytest.raises(Exception, match="HALDIR_ENCRYPTION_KEY"):
        await stranger.vault.verify_vault_keys()


async def test_rotation_rewraps_every_data_key_while_secrets_are_released(
    governor: Governor, store: SqlStore, clock: FakeClock, keyring: MasterKeyring
) -> None:
    tenants = [f"t{n}" for n in range(12)]
    sessions: dict[str, str] = {}
    for tenant in tenants:
        principal = Principal.operator(tenant)
        await governor.keys.create_key(principal, name="setup", scopes=["*"])
        await governor.vault.store_secret(principal, name="token", value=f"value of {tenant}")
        sessions[tenant] = await _session(governor, principal=principal)
    keys = list(keyring.keys)
    served = keys[:]  # what a server's key file holds; rotate-key puts the new key first, then reloads
    server_ring = MasterKeyring(keys, source="server", reload=lambda: served)
    released: list[str] = []
    rotations: list[int] = []

    async def release_round() -> None:
        server = wire(store=store, clock=clock, master_keys=server_ring)  # a fresh cache each round
        async with anyio.create_task_group() as tg:
            for tenant in tenants:
                tg.start_soon(release, server, tenant)

    async def release(server: Governor, tenant: str) -> None:
        got = await server.vault.get_secret(Principal.operator(tenant), "token", session_id=sessions[tenant])
        assert got.value == f"value of {tenant}"
        released.append(tenant)

    async def rotate() -> None:
        for _ in range(2):
            keys.insert(0, generate_master_key())
            served[:] = keys
            operator = wire(store=store, clock=clock, master_keys=MasterKeyring(keys[:], source="operator"))
            rotations.append((await operator.vault.rotate_master_key(ACME)).version)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rotate)
            for _ in range(6):
                tg.start_soon(release_round)
    assert rotations == [2, 3]
    assert len(released) == 6 * len(tenants)
    assert await store.vault.data_key_counts() == {3: len(tenants)}  # nothing left on versions 1 and 2
    only_newest = wire(store=store, clock=clock, master_keys=MasterKeyring(keys[:1], source="newest"))
    await only_newest.vault.verify_vault_keys()
    for tenant in tenants:
        got = await only_newest.vault.get_secret(
            Principal.operator(tenant), "token", session_id=sessions[tenant]
        )
        assert got.value == f"value of {tenant}"


async def test_concurrent_stores_of_one_name_get_distinct_versions(governor: Governor) -> None:
    async def store(n: int) -> None:
        await governor.vault.store_secret(ACME, name="busy", value=f"value {n}")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(store, n)
    info = await governor.vault.secret_info(ACME, "busy")
    assert (info.latest_version, info.versions) == (10, 10)
    session = await _session(governor)
    values = {
        (await governor.vault.get_secret(ACME, "busy", session_id=session, version=v)).value
        for v in range(1, 11)
    }
    assert values == {f"value {n}" for n in range(10)}


async def test_an_idempotent_store_replays_without_a_new_version(governor: Governor) -> None:
    first = await governor.vault.store_secret(ACME, name="k", value=VALUE, idempotency_key="once")
    again = await governor.vault.store_secret(ACME, name="k", value=VALUE, idempotency_key="once")
    assert again.replayed
    assert again.value.version == first.value.version == 1
    with pytest.raises(Exception, match="Idempotency-Key"):
        await governor.vault.store_secret(ACME, name="k", value="another", idempotency_key="once")
    assert (await governor.vault.secret_info(ACME, "k")).versions == 1


async def test_money_and_secrets_share_one_ledger_that_verifies(governor: Governor) -> None:
    await governor.vault.store_secret(ACME, name="k", value=VALUE)
    session = (
        await governor.sessions.create_session(
            ACME, agent_id="a", scopes=["read", "spend"], spend_limit=Decimal(5)
        )
    ).value
    await governor.vault.get_secret(ACME, "k", session_id=session.session_id)
    await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="1")
    assert (await governor.ledger.verify_log(ACME)).ok


async def test_concurrent_releases_of_two_secrets_are_each_counted_once(
    governor: Governor, clock: FakeClock
) -> None:
    """Releases in one commit update a secret's row once (by their number, with the latest time): none
    is lost or counted twice, and a failed release in the same commit counts nothing."""
    await governor.vault.store_secret(ACME, name="a", value="first")
    await governor.vault.store_secret(ACME, name="b", value="second", scope_required="b")
    allowed, denied = await _session(governor, "read", "b"), await _session(governor, "read")
    released: list[str] = []

    async def release(name: str, session: str) -> None:
        try:
            released.append((await governor.vault.get_secret(ACME, name, session_id=session)).value)
        except ScopeDenied:
            released.append("denied")

    async with anyio.create_task_group() as tg:
        for i in range(60):
            tg.start_soon(release, "a" if i % 3 else "b", denied if i % 10 == 0 else allowed)
        clock.advance(5)
    infos = {name: await governor.vault.secret_info(ACME, name) for name in ("a", "b")}
    assert released.count("first") == infos["a"].access_count == 40
    assert released.count("second") == infos["b"].access_count == 18
    assert released.count("denied") == 2  # b without its scope
    assert infos["a"].last_accessed_at == infos["b"].last_accessed_at == clock.now()
    records = await _vault_records(governor)
    assert sum(r["action"] == "secret.release" and r["status"] == "ok" for r in records) == 58


async def test_the_releases_queued_in_one_transaction_update_the_secret_once_with_the_latest_time(
    governor: Governor, store: SqlStore, clock: FakeClock
) -> None:
    await governor.vault.store_secret(ACME, name="a", value="first")
    times = [clock.now() + timedelta(seconds=s) for s in (3, 9, 1)]
    async with store.write_transaction() as tx:
        for at in times:
            tx.queue(SecretReleased("acme", "a", at))
    info = await governor.vault.secret_info(ACME, "a")
    assert (info.access_count, info.last_accessed_at) == (3, max(times))
