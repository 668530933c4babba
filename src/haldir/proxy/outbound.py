"""The SSRF check of an outbound URL, with its one piece of I/O: resolving the host."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

import anyio

from haldir.core.outbound import IPAddress, outbound_target, refusal
from haldir.errors import OutboundRefused

__all__ = ["RESOLVE_TIMEOUT", "check_outbound_url", "checked_addresses"]

RESOLVE_TIMEOUT = 10.0


async def check_outbound_url(
    url: str, allow: Sequence[IPv4Network | IPv6Network], *, https_unless_allowed: bool = False
) -> None:
    """Raise `OutboundRefused` unless every address `url`'s host resolves to may be reached; with
    `https_unless_allowed`, a plain http URL must also reach only addresses inside `allow`.

    This is the check at registration. A connection does not rely on it: it connects only to the
    addresses its own `checked_addresses` returned (`haldir.proxy.pinning`), since a name may resolve
    elsewhere by then. The message never repeats userinfo, path or query, which may carry credentials.
    """
    target = outbound_target(url)
    await checked_addresses(
        target.host,
        target.port,
        allow,
        label=f"outbound URL {target.display}",
        plaintext=https_unless_allowed and target.scheme != "https",
    )


async def checked_addresses(
    host: str, port: int, allow: Sequence[IPv4Network | IPv6Network], *, label: str, plaintext: bool = False
) -> list[IPAddress]:
    """`host`'s addresses, resolved once, when every one of them may be reached; else `OutboundRefused`
    with a message that starts with `label`. With `plaintext`, every address must also lie inside `allow`.

    Every address must pass, not just the first: a connection may try any of them.
    """
    addresses = await _resolve(host, port, label)
    for address in addresses:
        reason = refusal(address, allow)
        if reason is not None:
            raise OutboundRefused(f"{label} refused: {reason}")
    allowed = all(any(address in network for network in allow) for address in addresses)
    if plaintext and not allowed:
        raise OutboundRefused(
            f"{label} refused: use https; plain http is allowed only to networks in HALDIR_OUTBOUND_ALLOW"
        )
    return addresses


async def _resolve(host: str, port: int, label: str) -> list[IPAddress]:
    try:
        return [ip_address(host)]
    except ValueError:
        pass  # a name, or an IPv4 spelling only the C resolver reads (`2130706433`, `0x7f.1`)
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise OutboundRefused(
            f"{label} refused: its host did not resolve within {RESOLVE_TIMEOUT:g}s"
        ) from None
    except (OSError, UnicodeError):
        raise OutboundRefused(f"{label} refused: its host does not resolve; check the name") from None
    addresses = [ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise OutboundRefused(f"{label} refused: its host has no IPv4 or IPv6 address")
    return addresses
