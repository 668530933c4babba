"""The upstream pool against real MCP servers: mcp-server-time, server-everything and a tiny in-repo one."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

from haldir.errors import OutboundRefused, UpstreamUnavailable
from haldir.proxy.upstreams import UpstreamConfig, UpstreamPool
from tests.mcp_servers import (
    changing_tools_params,
    everything_http,
    everything_stdio_params,
    free_port,
    pid_alive,
    start_everything_http,
    stop,
    time_server_params,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
_ = everything_http  # the fixture, imported for pytest to find

LOOPBACK: list[IPv4Network | IPv6Network] = [ip_network("127.0.0.0/8")]
TENANT = "ten_a"


def stdio(name: str, params: StdioServerParameters, **env: str) -> UpstreamConfig:
    return UpstreamConfig(
        name=name,
        transport="stdio",
        url=None,
        headers={},
        command=params.command,
        args=list(params.args),
        env=env,
        fingerprint="v1",
    )


def http(name: str, url: str, headers: dict[str, str] | None = None) -> UpstreamConfig:
    return UpstreamConfig(
        name=name,
        transport="http",
        url=url,
        headers=headers or {},
        command=None,
        args=[],
        env={},
        fingerprint="v1",
    )


class Changes:
    """Records `on_tools_changed` calls and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._event = anyio.Event()

    async def __call__(self, tenant_id: str, name: str) -> None:
        self.seen.append((tenant_id, name))
        self._event.set()

    async def wait_for(self, key: tuple[str, str]) -> None:
        with anyio.fail_after(10):
            while key not in self.seen:
                await self._event.wait()
                self._event = anyio.Event()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    async with UpstreamPool(outbound_allow=LOOPBACK, on_tools_changed=None, call_timeout=15) as opened:
        yield opened


async def pid_of(pool: UpstreamPool, config: UpstreamConfig, tenant_id: str = TENANT) -> int:
    result = await pool.call_tool(tenant_id, config, "pid", {})
    return int(result["content"][0]["text"])


async def direct_tools(server: StdioServerParameters | str) -> list[dict[str, Any]]:
    async with Client(server, cache=None) as client:
        listed = await client.list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed.tools]


async def direct_call(
    server: StdioServerParameters | str, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    async with Client(server, cache=None) as client:
        result = await client.call_tool(tool, arguments)
    return result.model_dump(mode="json", by_alias=True, exclude_unset=True)


# tools/list and tools/call


async def test_the_time_server_lists_the_same_tools_through_the_pool(pool: UpstreamPool) -> None:
    listed = await pool.list_tools(TENANT, stdio("time", time_server_params()))
    assert {tool["name"] for tool in listed} == {"get_current_time", "convert_time"}
    assert listed == await direct_tools(time_server_params())
    assert all("inputSchema" in tool for tool in listed)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_server_everything_lists_the_same_tools_through_the_pool(
    pool: UpstreamPool, transport: str, request: pytest.FixtureRequest
) -> None:
    if transport == "http":
        server: StdioServerParameters | str = request.getfixturevalue("everything_http")
        config = http("everything", str(server))
    else:
        server = everything_stdio_params()
        config = stdio("everything", server)
    listed = await pool.list_tools(TENANT, config)
    assert {"echo", "get-sum", "get-env"} <= {tool["name"] for tool in listed}
    assert listed == await direct_tools(server)


async def test_a_call_answers_what_the_upstream_answers_directly(
    pool: UpstreamPool, everything_http: str
) -> None:
    time_args = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    cases: list[tuple[UpstreamConfig, StdioServerParameters | str, str, dict[str, Any]]] = [
        (stdio("time", time_server_params()), time_server_params(), "convert_time", time_args),
        (
            stdio("everything", everything_stdio_params()),
            everything_stdio_params(),
            "get-sum",
            {"a": 2, "b": 3},
        ),
        (http("everything-http", everything_http), everything_http, "echo", {"message": "héllo"}),
        (stdio("everything", everything_stdio_params()), everything_stdio_params(), "get-sum", {"a": "x"}),
    ]
    for config, server, tool, arguments in cases:
        through_pool = await pool.call_tool(TENANT, config, tool, arguments)
        assert through_pool == await direct_call(server, tool, arguments), (config.name, tool)


async def test_32_concurrent_calls_share_one_connection_and_one_process(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    everything = stdio("everything", everything_stdio_params())
    pids: list[int] = []
    sums: dict[int, str] = {}

    async def call_pid() -> None:
        pids.append(await pid_of(pool, changing))

    async def call_sum(n: int) -> None:
        result = await pool.call_tool(TENANT, everything, "get-sum", {"a": n, "b": 1000})
        sums[n] = result["content"][0]["text"]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for n in range(32):
                group.start_soon(call_pid)
                group.start_soon(call_sum, n)
    assert len(pids) == 32
    assert len(set(pids)) == 1
    assert sums == {n: f"The sum of {n} and 1000 is {n + 1000}." for n in range(32)}


async def test_tenants_get_separate_connections(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    assert await pid_of(pool, changing, "ten_a") != await pid_of(pool, changing, "ten_b")


# tools/list_changed


async def test_a_2026_upstream_that_changes_its_tools_reaches_on_tools_changed() -> None:
    changes = Changes()
    changing = stdio("changing", changing_tools_params())
    async with UpstreamPool(outbound_allow=[], on_tools_changed=changes) as pool:
        before = {tool["name"] for tool in await pool.list_tools(TENANT, changing)}
        await pool.call_tool(TENANT, changing, "grow", {})
        await changes.wait_for((TENANT, "changing"))
        after = {tool["name"] for tool in await pool.list_tools(TENANT, changing)}
    assert after - before == {"extra_1"}


async def test_a_handshake_era_upstream_that_changes_its_tools_reaches_on_tools_changed() -> None:
    # server-everything (protocol 2025-11-25) registers more tools once initialized, and says so.
    changes = Changes()
    async with UpstreamPool(outbound_allow=[], on_tools_changed=changes) as pool:
        await pool.list_tools(TENANT, stdio("everything", everything_stdio_params()))
        await changes.wait_for((TENANT, "everything"))


# supervision


async def test_a_killed_stdio_upstream_is_restarted_by_the_next_call(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    first = await pid_of(pool, changing)
    os.kill(first, signal.SIGKILL)
    failures = 0
    with anyio.fail_after(15):
        while True:
            try:
                second = await pid_of(pool, changing)
                break
            except UpstreamUnavailable:  # a call racing the death; the next one reconnects
                failures += 1
                await anyio.sleep(0.05)
    assert second != first
    assert failures <= 1
    assert not pid_alive(first)


async def test_an_upstream_that_crashes_mid_call_fails_that_call_and_recovers(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    first = await pid_of(pool, changing)
    with pytest.raises(UpstreamUnavailable, match="closed during tools/call 'crash'"):
        await pool.call_tool(TENANT, changing, "crash", {})
    assert await pid_of(pool, changing) != first


async def test_a_changed_config_reconnects_and_ends_the_old_process(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    first = await pid_of(pool, changing)
    changed = UpstreamConfig(**{**changing.__dict__, "fingerprint": "v2"})
    assert await pid_of(pool, changed) != first
    assert not pid_alive(first)


async def test_drop_ends_the_upstream_process(pool: UpstreamPool) -> None:
    changing = stdio("changing", changing_tools_params())
    pid = await pid_of(pool, changing)
    await pool.drop(TENANT, "changing")
    assert not pid_alive(pid)
    assert await pid_of(pool, changing) != pid


async def test_leaving_the_pool_ends_every_stdio_process() -> None:
    changing = stdio("changing", changing_tools_params())
    async with UpstreamPool(outbound_allow=[], on_tools_changed=None) as pool:
        pids = [await pid_of(pool, changing, tenant) for tenant in ("ten_a", "ten_b", "ten_c")]
        assert all(pid_alive(pid) for pid in pids)
    assert not any(pid_alive(pid) for pid in pids)


async def test_cancelling_the_pool_owner_ends_every_stdio_process() -> None:
    changing = stdio("changing", changing_tools_params())
    pids: list[int] = []
    ready = anyio.Event()

    async def owner() -> None:
        async with UpstreamPool(outbound_allow=[], on_tools_changed=None) as pool:
            pids.append(await pid_of(pool, changing))
            ready.set()
            await anyio.sleep_forever()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(owner)
            await ready.wait()
            group.cancel_scope.cancel()
    assert pids
    assert not pid_alive(pids[0])


# failures


async def test_a_call_that_outlasts_the_timeout_fails_instead_of_hanging() -> None:
    everything = stdio("everything", everything_stdio_params())
    async with UpstreamPool(outbound_allow=[], on_tools_changed=None, call_timeout=0.5) as pool:
        with anyio.fail_after(10), pytest.raises(UpstreamUnavailable, match="did not answer"):
            await pool.call_tool(
                TENANT, everything, "trigger-long-running-operation", {"duration": 5, "steps": 5}
            )


async def test_a_missing_command_fails_clearly_and_backs_off(pool: UpstreamPool) -> None:
    config = UpstreamConfig(
        name="missing",
        transport="stdio",
        url=None,
        headers={},
        command="/nonexistent/mcp-server",
        args=[],
        env={"TOKEN": "env-secret-value"},
        fingerprint="v1",
    )
    with pytest.raises(UpstreamUnavailable, match="could not connect to upstream 'missing'"):
        await pool.list_tools(TENANT, config)
    with pytest.raises(UpstreamUnavailable, match="next attempt in"):
        await pool.list_tools(TENANT, config)


async def test_an_unreachable_http_upstream_fails_without_leaking_its_headers(pool: UpstreamPool) -> None:
    config = http(
        "down", f"http://127.0.0.1:{free_port()}/mcp", {"Authorization": "Bearer header-secret-value"}
    )
    with anyio.fail_after(10), pytest.raises(UpstreamUnavailable) as failed:
        await pool.list_tools(TENANT, config)
    assert "could not connect to upstream 'down' (http)" in failed.value.message
    assert "header-secret-value" not in failed.value.message
    assert failed.value.http_status == 502


async def test_an_http_upstream_gets_its_headers() -> None:
    received: list[bytes] = []

    async def answer(stream: Any) -> None:
        async with stream:
            received.append(await stream.receive(65536))
            await stream.send(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    config = http("capture", f"http://127.0.0.1:{port}/mcp", {"Authorization": "Bearer header-secret-value"})
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, answer)
        async with UpstreamPool(outbound_allow=LOOPBACK, on_tools_changed=None) as pool:
            with anyio.fail_after(10), pytest.raises(UpstreamUnavailable) as failed:
                await pool.list_tools(TENANT, config)
        group.cancel_scope.cancel()
    assert b"authorization: Bearer header-secret-value" in received[0].lower().replace(b"bearer", b"Bearer")
    assert "header-secret-value" not in failed.value.message


async def test_an_upstream_that_never_answers_the_handshake_fails_after_the_connect_timeout() -> None:
    async def silent(stream: Any) -> None:
        async with stream:
            await stream.receive(65536)
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, silent)
        async with UpstreamPool(outbound_allow=LOOPBACK, on_tools_changed=None, connect_timeout=0.5) as pool:
            with (
                anyio.fail_after(10),
                pytest.raises(UpstreamUnavailable, match=r"did not connect within 0\.5s"),
            ):
                await pool.list_tools(TENANT, http("silent", f"http://127.0.0.1:{port}/mcp"))
        group.cancel_scope.cancel()


async def test_an_http_upstream_on_loopback_is_refused_unless_allowed(everything_http: str) -> None:
    config = http("everything", everything_http)
    async with UpstreamPool(outbound_allow=[], on_tools_changed=None) as pool:
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await pool.list_tools(TENANT, config)
    async with UpstreamPool(outbound_allow=LOOPBACK, on_tools_changed=None) as pool:
        assert await pool.list_tools(TENANT, config)


async def test_an_http_upstream_that_restarts_is_reconnected(pool: UpstreamPool) -> None:
    port = free_port()
    config = http("everything", f"http://127.0.0.1:{port}/mcp")
    process = start_everything_http(port)
    try:
        assert (await pool.call_tool(TENANT, config, "echo", {"message": "one"}))["content"]
        stop(process)
        with pytest.raises(UpstreamUnavailable):
            await pool.call_tool(TENANT, config, "echo", {"message": "two"})
        process = start_everything_http(port)
        with anyio.fail_after(15):
            while True:
                try:
                    result = await pool.call_tool(TENANT, config, "echo", {"message": "three"})
                    break
                except UpstreamUnavailable:
                    await anyio.sleep(0.1)
        assert result["content"][0]["text"] == "Echo: three"
    finally:
        stop(process)


async def test_a_stdio_upstream_does_not_see_the_servers_environment(
    pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALDIR_TEST_SECRET", "must-not-leak")
    config = stdio("everything", everything_stdio_params(), UPSTREAM_SETTING="given")
    result = await pool.call_tool(TENANT, config, "get-env", {})
    env = json.loads(result["content"][0]["text"])
    assert "HALDIR_TEST_SECRET" not in env
    assert env["UPSTREAM_SETTING"] == "given"
    assert not any(name.startswith("HALDIR_") for name in env)
