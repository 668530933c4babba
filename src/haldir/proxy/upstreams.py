"""Live MCP client connections to upstream servers: one per (tenant, upstream) per process.

Each connection lives in a supervisor task of the pool's task group. Connections open lazily on first
use (concurrent first uses share one connect), reopen on the next use after the upstream dies or its
config changes, and back off while an upstream keeps failing. Leaving the pool closes every connection
and ends every stdio process, also when the owner is cancelled.

Protocol era: `mode="auto"` probes `server/discover` and falls back to the `initialize` handshake.
Handshake-era upstreams send `notifications/tools/list_changed` unprompted; 2026-07-28 upstreams send
change events only on an open `subscriptions/listen` stream, so the supervisor holds one open. Either
way the notification reaches the client's `message_handler` (listen events are teed to it), which is
the one place that calls `on_tools_changed`. `mode="legacy"` would lose nothing today but would cut off
upstreams that speak only 2026-07-28.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from ipaddress import IPv4Network, IPv6Network
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx2
import structlog
from anyio.abc import TaskGroup, TaskStatus
from mcp.client._transport import TransportStreams
from mcp.client.client import Client
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, Implementation
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from haldir.core.status import UpstreamState
from haldir.errors import HaldirError, InvalidRequest, UpstreamUnavailable
from haldir.proxy.pinning import OutboundPins, pinned_httpx2_transport

__all__ = ["ToolsChanged", "UpstreamConfig", "UpstreamPool"]

log = structlog.get_logger("haldir.proxy")

ToolsChanged = Callable[[str, str], Awaitable[None]]
Key = tuple[str, str]
T = TypeVar("T")

CLOSE_TIMEOUT = 10.0  # a stdio upstream gets 2 s after stdin closes, then SIGTERM, then SIGKILL
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
MAX_TOOL_PAGES = 100
# Environment a stdio upstream gets besides its own `env`. The SDK adds HOME, LOGNAME, PATH, SHELL,
# TERM and USER; nothing else of this server's environment (HALDIR_* secrets!) is passed on.
CHILD_BASE_ENV = ("LANG",)


@dataclass(frozen=True)
class UpstreamConfig:
    """How to reach one upstream, secrets already substituted; `fingerprint` changes with the config."""

    name: str
    transport: Literal["http", "stdio"]
    url: str | None = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    command: str | None
    args: list[str]
    env: dict[str, str] = field(repr=False)
    fingerprint: str


class _Connection:
    """One MCP client session and the events its supervisor task answers to."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.client: Client | None = None
        self.ended = anyio.Event()  # the transport closed: the upstream went away
        self.stop = anyio.Event()  # the pool wants it closed
        self.finished = anyio.Event()  # the supervisor is gone, and with it any process
        self.served = False  # answered a request: a later death is not a crash loop

    @property
    def usable(self) -> bool:
        return self.client is not None and not (self.ended.is_set() or self.stop.is_set())


@dataclass
class _Slot:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    connection: _Connection | None = None
    fingerprint: str | None = None
    connected_before: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


class UpstreamPool:
    """MCP client connections to upstreams; use as `async with UpstreamPool(...) as pool`."""

    def __init__(
        self,
        *,
        outbound_allow: Sequence[IPv4Network | IPv6Network],
        on_tools_changed: ToolsChanged | None,
        call_timeout: float = 60,
        connect_timeout: float = 20,
    ) -> None:
        self._allow = tuple(outbound_allow)
        self._on_tools_changed = on_tools_changed
        self._call_timeout = call_timeout
        self._connect_timeout = connect_timeout
        self._slots: dict[Key, _Slot] = {}
        self._tasks: TaskGroup | None = None
        self._closing = False

    async def __aenter__(self) -> Self:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        # Cancelling is enough: each transport's shutdown is shielded and bounded (stdio: close stdin,
        # SIGTERM, SIGKILL), so every process is gone when the task group has joined.
        self._closing = True
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()
        try:
            return await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            self._slots.clear()

    def state(self, tenant_id: str, name: str) -> UpstreamState:
        """What this pool knows of an upstream: connected, or how often connecting failed in a row."""
        slot = self._slots.get((tenant_id, name))
        if slot is None:
            return UpstreamState(name, connected=False)
        connected = slot.connection is not None and slot.connection.usable
        return UpstreamState(name, connected=connected, failures=slot.failures, last_error=slot.last_error)

    async def list_tools(self, tenant_id: str, config: UpstreamConfig) -> list[dict[str, Any]]:
        """Every tool the upstream lists (all pages), each as its wire JSON."""

        async def send(client: Client) -> list[dict[str, Any]]:
            tools: list[dict[str, Any]] = []
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(
                    tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in page.tools
                )
                cursor = page.next_cursor
                if cursor is None:
                    return tools
            raise UpstreamUnavailable(
                f"upstream {config.name!r} listed more than {MAX_TOOL_PAGES} pages of tools; gave up",
                upstream=config.name,
            )

        try:
            return await self._request(tenant_id, config, "tools/list", send)
        except _ConnectionLost:
            # Listing is idempotent: one retry on a fresh connection is safe.
            return await self._request(tenant_id, config, "tools/list", send, retry=False)

    async def call_tool(
        self, tenant_id: str, config: UpstreamConfig, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Forward one `tools/call`; the upstream's `CallToolResult` as its wire JSON.

        A call is never retried: when the connection drops mid-call the tool may or may not have run.
        """

        async def send(client: Client) -> dict[str, Any]:
            result = await client.call_tool(tool, arguments)
            return result.model_dump(mode="json", by_alias=True, exclude_unset=True)

        try:
            return await self._request(tenant_id, config, f"tools/call {tool!r}", send)
        except _ConnectionLost as lost:
            raise lost.error from None

    async def drop(self, tenant_id: str, name: str) -> None:
        """Close the connection to one upstream (its process ends); the next use opens a new one."""
        slot = self._slots.pop((tenant_id, name), None)
        if slot is None:
            return
        async with slot.lock:  # a connect in progress finishes first, then is closed here
            if slot.connection is not None:
                await self._close(slot.connection)

    # connections

    async def _request(
        self,
        tenant_id: str,
        config: UpstreamConfig,
        what: str,
        send: Callable[[Client], Awaitable[T]],
        *,
        retry: bool = True,
    ) -> T:
        connection = await self._connection(tenant_id, config)
        assert connection.client is not None
        name = config.name
        try:
            with anyio.fail_after(self._call_timeout):
                result = await send(connection.client)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {name!r} did not answer {what} within {self._call_timeout:g}s", upstream=name
            ) from None
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                message = _scrub(exc.error.message, _secrets(config))
                raise UpstreamUnavailable(
                    f"upstream {name!r} answered {what} with error {exc.code}: {message}",
                    upstream=name,
                    upstream_error_code=exc.code,
                ) from None
            connection.ended.set()
            error = UpstreamUnavailable(
                f"the connection to upstream {name!r} closed during {what}; the next call reconnects",
                upstream=name,
            )
            raise _ConnectionLost(error) if retry else error from None
        except HaldirError:
            raise
        except Exception as exc:  # a malformed result, a transport fault: the upstream failed
            raise UpstreamUnavailable(
                f"upstream {name!r} failed {what}: {_describe(exc, _secrets(config))}", upstream=name
            ) from None
        connection.served = True
        slot = self._slots.get((tenant_id, name))
        if slot is not None:
            slot.failures = 0
        return result

    async def _connection(self, tenant_id: str, config: UpstreamConfig) -> _Connection:
        key = (tenant_id, config.name)
        slot = self._slots.setdefault(key, _Slot())
        found = slot.connection
        if found is not None and found.usable and found.config.fingerprint == config.fingerprint:
            return found
        async with slot.lock:
            if self._slots.get(key) is not slot:  # dropped while this call waited for the lock
                return await self._connection(tenant_id, config)
            found = slot.connection
            if found is not None and found.usable and found.config.fingerprint == config.fingerprint:
                return found
            if found is not None:
                slot.connection = None
                if found.ended.is_set() and not found.served and not found.stop.is_set():
                    self._failed(slot, "it closed the connection right after connecting")
                await self._close(found)
            if slot.fingerprint != config.fingerprint:
                slot.fingerprint, slot.failures, slot.retry_at = config.fingerprint, 0, 0.0
            wait = slot.retry_at - anyio.current_time()
            if wait > 0:
                raise UpstreamUnavailable(
                    f"upstream {config.name!r} failed {slot.failures} time(s) in a row "
                    f"(last: {slot.last_error}); next attempt in {wait:.1f}s",
                    upstream=config.name,
                )
            connection = await self._connect(key, config, slot)
            slot.connection = connection
            if slot.connected_before:
                # The upstream restarted: its tools may have changed while nobody listened.
                self._tools_changed(key)
            slot.connected_before = True
            return connection

    async def _connect(self, key: Key, config: UpstreamConfig, slot: _Slot) -> _Connection:
        if self._closing or self._tasks is None:
            raise UpstreamUnavailable(f"upstream {config.name!r}: the pool is closed", upstream=config.name)
        connection = _Connection(config)
        try:
            await self._tasks.start(self._supervise, key, connection)
        except UpstreamUnavailable as exc:
            self._failed(slot, exc.message)
            raise
        return connection

    def _failed(self, slot: _Slot, reason: str) -> None:
        slot.failures += 1
        slot.last_error = reason
        slot.retry_at = anyio.current_time() + min(BACKOFF_FIRST * 2 ** (slot.failures - 1), BACKOFF_MAX)

    async def _close(self, connection: _Connection) -> None:
        connection.stop.set()
        with anyio.move_on_after(CLOSE_TIMEOUT * 2, shield=True):
            await connection.finished.wait()

    async def _supervise(self, key: Key, connection: _Connection, *, task_status: TaskStatus[None]) -> None:
        """Open the connection, hold it until the upstream goes away or the pool closes it, then close it."""
        config = connection.config
        started = False
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout) as life:
                async with AsyncExitStack() as stack:
                    client = await self._open(stack, key, connection)
                    life.deadline = math.inf
                    connection.client = client
                    started = True
                    task_status.started()
                    async with anyio.create_task_group() as watchers:
                        if _needs_listen(client):
                            watchers.start_soon(self._listen, key, connection)
                        await _first_of(connection.ended, connection.stop)
                        watchers.cancel_scope.cancel()
                    life.deadline = anyio.current_time() + CLOSE_TIMEOUT
            if not started:
                raise UpstreamUnavailable(
                    f"upstream {config.name!r} did not connect within {self._connect_timeout:g}s",
                    upstream=config.name,
                )
        except Exception as exc:
            if not started and isinstance(exc, HaldirError):
                raise
            reason = _describe(exc, _secrets(config))
            if not started:
                raise UpstreamUnavailable(
                    f"could not connect to upstream {config.name!r} ({config.transport}): {reason}",
                    upstream=config.name,
                ) from None
            log.warning("proxy.upstream_lost", tenant_id=key[0], upstream=config.name, reason=reason)
        finally:
            connection.ended.set()
            connection.finished.set()

    async def _open(self, stack: AsyncExitStack, key: Key, connection: _Connection) -> Client:
        config = connection.config
        transport: AbstractAsyncContextManager[Any]
        if config.transport == "http":
            if not config.url:
                raise InvalidRequest(f"http upstream {config.name!r} needs a url")
            # Resolved and checked once per connection to the upstream: every HTTP connection the
            # session opens (POSTs, the GET stream, reconnects) goes to these addresses.
            pins = OutboundPins(self._allow)
            await pins.pin(config.url)
            http = httpx2.AsyncClient(  # as the SDK's create_mcp_http_client, with the pinned transport
                # SSL_CERT_FILE / SSL_CERT_DIR still name the CAs upstreams are verified against, as
                # with the SDK's client; an environment proxy is never used (it would connect for us).
                transport=pinned_httpx2_transport(pins, env_certificates=True),
                headers=dict(config.headers),
                timeout=httpx2.Timeout(self._connect_timeout, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
                trust_env=False,  # never through a proxy from the environment
            )
            await stack.enter_async_context(http)
            transport = streamable_http_client(config.url, http_client=http)
        else:
            if not config.command:
                raise InvalidRequest(f"stdio upstream {config.name!r} needs a command")
            base = {name: os.environ[name] for name in CHILD_BASE_ENV if name in os.environ}
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=base | config.env
            )
            transport = stdio_client(params, errlog=sys.stderr)

        async def on_message(message: IncomingMessage) -> None:
            if getattr(message, "method", None) == "notifications/tools/list_changed":
                self._tools_changed(key)

        client = Client(
            _WatchedTransport(transport, connection.ended),
            mode="auto",
            cache=None,  # a proxy must see the upstream's current tools, never a cached listing
            message_handler=on_message,
            read_timeout_seconds=self._call_timeout,
            client_info=Implementation(name="haldir", version=_haldir_version()),
        )
        await stack.enter_async_context(client)
        return client

    async def _listen(self, key: Key, connection: _Connection) -> None:
        """Hold a `subscriptions/listen` stream open on a 2026-07-28 connection, re-listening on loss."""
        assert connection.client is not None
        delay = BACKOFF_FIRST
        while True:
            try:
                async with connection.client.listen(tools_list_changed=True) as subscription:
                    delay = BACKOFF_FIRST
                    async for _event in subscription:
                        pass  # the session tees each event to `on_message`
            except Exception as exc:
                if connection.ended.is_set() or connection.stop.is_set():
                    return  # the connection is going away; its supervisor handles that
                log.info("proxy.listen_lost", tenant_id=key[0], upstream=key[1], reason=type(exc).__name__)
            await anyio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            self._tools_changed(key)  # changes while not listening were missed

    def _tools_changed(self, key: Key) -> None:
        if self._on_tools_changed is None or self._tasks is None or self._closing:
            return
        self._tasks.start_soon(self._call_tools_changed, self._on_tools_changed, key)

    @staticmethod
    async def _call_tools_changed(callback: ToolsChanged, key: Key) -> None:
        try:
            await callback(*key)
        except Exception:  # a failing listener must not take the pool (and every connection) down
            log.exception("proxy.tools_changed_failed", tenant_id=key[0], upstream=key[1])


class _WatchedTransport:
    """A transport whose read side sets `ended` at end of stream: the upstream closed or died.

    The SDK's session outlives a dead transport (its calls then fail with CONNECTION_CLOSED); this is
    how the supervisor learns of the death without waiting for a call to fail.
    """

    def __init__(self, inner: AbstractAsyncContextManager[TransportStreams], ended: anyio.Event) -> None:
        self._inner = inner
        self._ended = ended

    async def __aenter__(self) -> TransportStreams:
        read_stream, write_stream = await self._inner.__aenter__()
        return _WatchedReadStream(read_stream, self._ended), write_stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)


class _WatchedReadStream:
    def __init__(self, inner: ReadStream[SessionMessage | Exception], ended: anyio.Event) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> contextvars.Context | None:
        # Streamable HTTP hands each message's sender context to the dispatcher through this.
        context: contextvars.Context | None = getattr(self._inner, "last_context", None)
        return context

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self._inner.aclose()
        return None


class _ConnectionLost(Exception):
    def __init__(self, error: UpstreamUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _needs_listen(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return (
        client.protocol_version in MODERN_PROTOCOL_VERSIONS and tools is not None and bool(tools.list_changed)
    )


async def _first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


def _secrets(config: UpstreamConfig) -> list[str]:
    values = [*config.headers.values(), *config.env.values()]
    if config.url:
        try:
            parts = urlsplit(config.url)
            values.extend(value for value in (parts.username, parts.password) if value)
        except ValueError:
            pass
    return values


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text[:500]


def _describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """A short, secret-free account of an exception (of the leaves, for an exception group)."""
    leaves = list(_leaves(exc))
    text = "; ".join(
        f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__ for leaf in leaves[:3]
    )
    return _scrub(text, secrets)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@cache
def _haldir_version() -> str:
    try:
        return version("haldir")
    except PackageNotFoundError:
        return "0"
