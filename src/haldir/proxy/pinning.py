"""HTTP clients whose every connection goes to an address that passed the SSRF check.

The check and the connection share one DNS answer: an httpcore network backend resolves the host,
checks every address (`checked_addresses`) and connects to one of those addresses, never to the name.
The request keeps its URL, so the Host header, TLS SNI and certificate verification still use the
host name. A resolver that changes its answer between check and connect (DNS rebinding) therefore
changes nothing. Webhooks use `httpx`; the MCP SDK uses `httpx2`: one backend class per library, one
`OutboundPins` behind both.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import TypeVar

import httpcore
import httpcore2
import httpx
import httpx2

from haldir.core.outbound import IPAddress, outbound_target
from haldir.errors import OutboundRefused
from haldir.proxy.outbound import checked_addresses

__all__ = ["OutboundPins", "pinned_httpx2_transport", "pinned_httpx_transport"]

S = TypeVar("S")


class OutboundPins:
    """Where connections may go: each (host, port) is resolved and checked once per connection, or once
    for the life of this object when `pin` fixed it first.

    `plaintext` is for clients that speak plain http: then every address must also lie inside `allow`.
    """

    def __init__(self, allow: Sequence[IPv4Network | IPv6Network], *, plaintext: bool = False) -> None:
        self._allow = tuple(allow)
        self._plaintext = plaintext
        self._pinned: dict[tuple[str, int], list[IPAddress]] = {}

    async def pin(self, url: str) -> None:
        """Resolve and check `url`'s host now (raising `OutboundRefused` if it fails) and connect every
        later connection to that host and port to these same addresses, without resolving again."""
        target = outbound_target(url)
        label = f"outbound URL {target.display}"
        addresses = await checked_addresses(
            target.host, target.port, self._allow, label=label, plaintext=self._plaintext
        )
        self._pinned[(target.host.lower(), target.port)] = addresses

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        pinned = self._pinned.get((host.lower(), port))
        if pinned is not None:
            return pinned
        shown = f"[{host}]" if ":" in host else host
        label = f"outbound connection to {shown}:{port}"
        return await checked_addresses(host, port, self._allow, label=label, plaintext=self._plaintext)


async def _first_reachable(
    addresses: Sequence[IPAddress],
    connect: Callable[[str], Awaitable[S]],
    failures: tuple[type[Exception], ...],
) -> S:
    """Connect to the first address that answers, in resolver order; each one passed the check."""
    for address in addresses[:-1]:
        try:
            return await connect(str(address))
        except failures:
            continue
    return await connect(str(addresses[-1]))


_NO_UNIX_SOCKETS = "outbound connections over a unix socket are refused"


class _HttpcoreBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pins: OutboundPins) -> None:
        self._pins = pins
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async def connect(address: str) -> httpcore.AsyncNetworkStream:
            return await self._inner.connect_tcp(
                address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            )

        failures = (httpcore.ConnectError, httpcore.ConnectTimeout)
        return await _first_reachable(await self._pins.addresses(host, port), connect, failures)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused(_NO_UNIX_SOCKETS)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Httpcore2Backend(httpcore2.AsyncNetworkBackend):
    def __init__(self, pins: OutboundPins) -> None:
        self._pins = pins
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        async def connect(address: str) -> httpcore2.AsyncNetworkStream:
            return await self._inner.connect_tcp(
                address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            )

        failures = (httpcore2.ConnectError, httpcore2.ConnectTimeout)
        return await _first_reachable(await self._pins.addresses(host, port), connect, failures)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise OutboundRefused(_NO_UNIX_SOCKETS)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedHttpxTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self,
        pins: OutboundPins,
        *,
        verify: ssl.SSLContext | bool,
        limits: httpx.Limits,
        env_certificates: bool,
    ) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        # httpx takes no network backend; its pool is rebuilt around the one that pins, so no connection
        # of this transport can bypass the check (tests/proxy/test_pinning.py proves it end to end).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=env_certificates),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_HttpcoreBackend(pins),
        )


class _PinnedHttpx2Transport(httpx2.AsyncHTTPTransport):
    def __init__(
        self,
        pins: OutboundPins,
        *,
        verify: ssl.SSLContext | bool,
        limits: httpx2.Limits,
        env_certificates: bool,
    ) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(  # as in _PinnedHttpxTransport
            ssl_context=httpx2.create_ssl_context(verify=verify, trust_env=env_certificates),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Httpcore2Backend(pins),
        )


def pinned_httpx_transport(
    pins: OutboundPins,
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits | None = None,
    env_certificates: bool = False,
) -> httpx.AsyncHTTPTransport:
    """An `httpx` transport (webhooks) whose connections go only where `pins` says. It never uses a proxy;
    `env_certificates` trusts the CA certificates SSL_CERT_FILE or SSL_CERT_DIR name."""
    return _PinnedHttpxTransport(
        pins, verify=verify, limits=limits or httpx.Limits(), env_certificates=env_certificates
    )


def pinned_httpx2_transport(
    pins: OutboundPins,
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx2.Limits | None = None,
    env_certificates: bool = False,
) -> httpx2.AsyncHTTPTransport:
    """An `httpx2` transport (the MCP SDK's client, upstreams) whose connections go only where `pins` says."""
    return _PinnedHttpx2Transport(
        pins, verify=verify, limits=limits or httpx2.Limits(), env_certificates=env_certificates
    )
