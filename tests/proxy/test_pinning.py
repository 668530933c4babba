"""Outbound connections go to the address that passed the SSRF check, whatever the resolver says later.

The resolver is faked at the lowest level (`socket.getaddrinfo`), so every resolution anyone makes
(the check, httpcore, anyio) is counted and sees the flipped answer: a second resolution would show.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from haldir.errors import OutboundRefused
from haldir.proxy.pinning import OutboundPins, pinned_httpx2_transport, pinned_httpx_transport
from haldir.proxy.upstreams import UpstreamPool
from haldir.webhooks import HttpSender
from tests.mcp_servers import everything_http
from tests.proxy.test_upstreams import TENANT, http

pytestmark = pytest.mark.anyio
_ = everything_http  # the fixture, imported for pytest to find

ONLY_127_0_0_1: list[IPv4Network | IPv6Network] = [ip_network("127.0.0.1/32")]
NAME = "hooks.example"
_real_getaddrinfo = socket.getaddrinfo


@dataclass
class FlippingResolver:
    """Answers `first` for NAME the first time it is asked, `then` ever after; other names as usual."""

    first: str
    then: str
    calls: int = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name != NAME:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.calls += 1
        address = self.first if self.calls == 1 else self.then
        return _real_getaddrinfo(address, port, *args, **kwargs)


def flip(monkeypatch: pytest.MonkeyPatch, *, first: str, then: str) -> FlippingResolver:
    resolver = FlippingResolver(first, then)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


@dataclass
class Heard:
    requests: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


async def _answer(stream: Any, heard: Heard) -> None:
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        heard.requests.append(data)
        await stream.send(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")


@asynccontextmanager
async def listening(
    host: str, port: int = 0, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, Heard]]:
    """A tiny HTTP server on `host` that records each request head (and, over TLS, the SNI name)."""
    heard = Heard()
    listener: Any = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: heard.server_names.append(name)  # type: ignore[assignment,func-returns-value]
        listener = TLSListener(listener, tls, standard_compatible=False)

    async def handle(stream: SocketStream) -> None:
        await _answer(stream, heard)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield bound, heard
        group.cancel_scope.cancel()


def host_header(request: bytes) -> str:
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            return value.strip().decode()
    raise AssertionError("no Host header")


def certificate_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `name`: the server's context and a client context that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_a_webhook_goes_to_the_checked_address_when_the_name_later_resolves_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with listening("127.0.0.1") as (port, checked), listening("127.0.0.2", port) as (_, elsewhere):
        resolver = flip(monkeypatch, first="127.0.0.1", then="127.0.0.2")
        sender = HttpSender(outbound_allow=ONLY_127_0_0_1, timeout=5)
        try:
            with anyio.fail_after(10):
                first = await sender.post(f"http://{NAME}:{port}/hook", b"{}", {})
                # The answer said "connection: close": the next POST opens a new connection, which
                # resolves and is checked on its own: the name now points at 127.0.0.2, not allowed.
                second = await sender.post(f"http://{NAME}:{port}/hook", b"{}", {})
        finally:
            await sender.aclose()
    assert (first.status_code, first.error) == (204, None)
    assert host_header(checked.requests[0]) == f"{NAME}:{port}"
    assert second.status_code is None
    assert second.error is not None
    assert "127.0.0.2 is a loopback address" in second.error
    assert resolver.calls == 2  # one resolution per connection: the check's, never a second to connect
    assert len(checked.requests) == 1
    assert elsewhere.requests == []


async def test_a_pinned_upstream_connects_only_to_the_address_it_checked(
    monkeypatch: pytest.MonkeyPatch, everything_http: str
) -> None:
    port = httpx2.URL(everything_http).port
    resolver = flip(monkeypatch, first="127.0.0.1", then="10.255.255.1")  # private: refused, and unroutable
    config = http("everything", f"http://{NAME}:{port}/mcp")
    async with UpstreamPool(outbound_allow=ONLY_127_0_0_1, on_tools_changed=None) as pool:
        with anyio.fail_after(30):
            tools = await pool.list_tools(TENANT, config)
            echoed = await pool.call_tool(TENANT, config, "echo", {"message": "pinned"})
    assert tools
    assert echoed["content"][0]["text"] == "Echo: pinned"
    assert resolver.calls == 1  # every HTTP connection of the session went to the pinned address
    async with UpstreamPool(outbound_allow=ONLY_127_0_0_1, on_tools_changed=None) as pool:
        with anyio.fail_after(10), pytest.raises(OutboundRefused, match=r"10\.255\.255\.1 is a private"):
            await pool.list_tools(TENANT, config)  # a new connection checks the new answer


async def test_a_connection_the_resolver_points_at_a_blocked_address_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with listening("127.0.0.2") as (port, blocked):
        flip(monkeypatch, first="127.0.0.2", then="127.0.0.2")
        transport = pinned_httpx_transport(OutboundPins(ONLY_127_0_0_1))
        async with httpx.AsyncClient(transport=transport) as client:
            with anyio.fail_after(10), pytest.raises(OutboundRefused, match=r"hooks\.example:\d+ refused"):
                await client.get(f"http://{NAME}:{port}/")
    assert blocked.requests == []


Transport = Callable[[OutboundPins, ssl.SSLContext], Any]


@pytest.mark.parametrize(
    "make",
    [
        lambda pins, verify: httpx.AsyncClient(transport=pinned_httpx_transport(pins, verify=verify)),
        lambda pins, verify: httpx2.AsyncClient(transport=pinned_httpx2_transport(pins, verify=verify)),
    ],
    ids=["httpx-webhooks", "httpx2-upstreams"],
)
async def test_tls_keeps_the_host_name_for_sni_certificate_and_host_header(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make: Transport
) -> None:
    server_tls, client_tls = certificate_for(NAME, tmp_path)
    async with listening("127.0.0.1", tls=server_tls) as (port, heard):
        resolver = flip(monkeypatch, first="127.0.0.1", then="127.0.0.2")
        async with make(OutboundPins(ONLY_127_0_0_1), client_tls) as client:
            with anyio.fail_after(10):
                response = await client.get(f"https://{NAME}:{port}/")
    assert response.status_code == 204  # the certificate for hooks.example verified against that name
    assert heard.server_names == [NAME]
    assert host_header(heard.requests[0]) == f"{NAME}:{port}"
    assert resolver.calls == 1


async def test_a_pinned_name_is_not_resolved_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async with listening("127.0.0.1") as (port, heard), listening("127.0.0.2", port) as (_, elsewhere):
        resolver = flip(monkeypatch, first="127.0.0.1", then="127.0.0.2")
        pins = OutboundPins(ONLY_127_0_0_1)
        await pins.pin(f"http://{NAME}:{port}/mcp")
        async with httpx2.AsyncClient(transport=pinned_httpx2_transport(pins)) as client:
            with anyio.fail_after(10):
                for _ in range(3):  # each answer closes its connection: three connections
                    assert (await client.get(f"http://{NAME}:{port}/mcp")).status_code == 204
    assert resolver.calls == 1
    assert len(heard.requests) == 3
    assert elsewhere.requests == []
