from __future__ import annotations

import socket
from ipaddress import IPv4Network, IPv6Network, ip_network

import anyio
import pytest

from haldir.core.outbound import outbound_target, refusal
from haldir.errors import OutboundRefused
from haldir.proxy.outbound import check_outbound_url

LOOPBACK = [ip_network("127.0.0.0/8")]
EVERYTHING_PRIVATE: list[IPv4Network | IPv6Network] = [
    ip_network(text)
    for text in ("0.0.0.0/0", "::/0")  # an allow-list that opens everything still never opens metadata
]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address under test, not a bind)
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("2002:c0a8:101::1", "192.168.1.1"),
    ],
)
def test_non_global_addresses_are_refused_without_an_allow_list(address: str, kind: str) -> None:
    reason = refusal(address, [])
    assert reason is not None
    assert kind in reason
    assert "HALDIR_OUTBOUND_ALLOW" in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2002:808:808::1"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert refusal(address, []) is None


@pytest.mark.parametrize(
    ("address", "allow"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("::ffff:127.0.0.1", "127.0.0.0/8"),
        ("10.9.8.7", "10.0.0.0/8"),
        ("100.64.0.1", "100.64.0.0/10"),
        ("::1", "::1/128"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_an_allowed_network_opens_its_addresses(address: str, allow: str) -> None:
    assert refusal(address, [ip_network(allow)]) is None


def test_an_allowed_network_opens_only_itself() -> None:
    reason = refusal("10.0.0.1", LOOPBACK)
    assert reason is not None
    assert "private" in reason


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "::ffff:a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::100.100.100.200",
        "2002:a9fe:a9fe::",
    ],
)
def test_cloud_metadata_addresses_are_refused_even_when_allowed(address: str) -> None:
    reason = refusal(address, EVERYTHING_PRIVATE)
    assert reason is not None
    assert "metadata" in reason


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://example.com", "scheme 'gopher'"),
        ("example.com/mcp", "scheme 'none'"),
        ("http:///mcp", "needs a host"),
        ("https://", "needs a host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_malformed_or_non_http_urls_are_refused(url: str, expected: str) -> None:
    with pytest.raises(OutboundRefused, match=expected):
        outbound_target(url)


def test_the_target_shows_scheme_host_and_port_only() -> None:
    target = outbound_target("HTTPS://user:pw@[::1]/mcp?token=abc")
    assert (target.scheme, target.host, target.port) == ("https", "::1", 443)
    assert target.display == "https://[::1]:443"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/mcp",
        "http://2130706433/mcp",  # decimal 127.0.0.1
        "http://0x7f.1/mcp",  # hex, short form
        "http://0177.0.0.1/mcp",  # octal
        "http://127.1/mcp",
        "http://[::1]:8080/mcp",
        "http://[::ffff:127.0.0.1]/mcp",
        "http://localhost/mcp",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.1/",
    ],
)
async def test_urls_that_reach_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="refused"):
        await check_outbound_url(url, [])


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3000/mcp", "http://2130706433/mcp", "http://[::ffff:127.0.0.1]/", "http://localhost/"],
)
async def test_loopback_urls_pass_when_loopback_is_allowed(url: str) -> None:
    allow: list[IPv4Network | IPv6Network] = [ip_network("127.0.0.0/8"), ip_network("::1/128")]
    await check_outbound_url(url, allow)


@pytest.mark.anyio
async def test_metadata_urls_are_refused_even_when_everything_is_allowed() -> None:
    with pytest.raises(OutboundRefused, match="metadata"):
        await check_outbound_url("http://169.254.169.254/", EVERYTHING_PRIVATE)


@pytest.mark.anyio
async def test_the_refusal_never_repeats_userinfo_path_or_query() -> None:
    url = "http://admin:hunter2-secret@127.0.0.1:9/mcp?api_key=qwerty-secret"
    with pytest.raises(OutboundRefused) as refused:
        await check_outbound_url(url, [])
    message = str(refused.value)
    assert "http://127.0.0.1:9" in message
    for secret in ("admin", "hunter2-secret", "qwerty-secret", "/mcp"):
        assert secret not in message


@pytest.mark.anyio
async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(OutboundRefused, match="does not resolve"):
        await check_outbound_url("https://no-such-host.invalid/mcp", [])


@pytest.mark.anyio
async def test_every_resolved_address_must_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    async def two_addresses(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", two_addresses)
    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.5 is a private address"):
        await check_outbound_url("https://rebind.example/mcp", [])


@pytest.mark.anyio
async def test_a_public_name_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def public(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 0))]

    monkeypatch.setattr(anyio, "getaddrinfo", public)
    await check_outbound_url("https://mcp.example.com/mcp", [])
