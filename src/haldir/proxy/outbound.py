"""The SSRF check of an outbound URL, with its one piece of I/O: resolving the host."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

import anyio

from haldir.core.outbound import IPAddress, outbound_target, refusal
from haldir.errors import OutboundRefused

__all__ = ["RESOLVE_TIMEOUT", "check_outbound_url"]

RESOLVE_TIMEOUT = 10.0


async def check_outbound_url(
    url: str, allow: Sequence[IPv4Network | IPv6Network], *, https_unless_allowed: bool = False
) -> None:
    """Raise `OutboundRefused` unless every address `url`'s host resolves to may be reached; with
    `https_unless_allowed`, a plain http URL must also reach only addresses inside `allow`.

    Every address must pass, not just the first: the HTTP client may try any of them. The message
    never repeats userinfo, path or query, which may carry credentials.
    """
    target = outbound_target(url)
    addresses = await _resolve(target.host, target.port, target.display)
    for address in addresses:
        reason = refusal(address, allow)
        if reason is not None:
            raise OutboundRefused(f"outbound URL {target.display} refused: {reason}")
    allowed = all(any(address in network for network in allow) for address in addresses)
    if https_unless_allowed and target.scheme != "https" and not allowed:
        raise OutboundRefused(
            f"outbound URL {target.display} refused: use https; plain http is allowed only to networks "
            "in HALDIR_OUTBOUND_ALLOW"
        )


async def _resolve(host: str, port: int, display: str) -> list[IPAddress]:
    try:
        return [ip_address(host)]
    except ValueError:
        pass  # a name, or an IPv4 spelling only the C resolver reads (`2130706433`, `0x7f.1`)
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise OutboundRefused(
            f"outbound URL {display} refused: its host did not resolve within {RESOLVE_TIMEOUT:g}s"
        ) from None
    except (OSError, UnicodeError):
        raise OutboundRefused(
            f"outbound URL {display} refused: its host does not resolve; check the name"
        ) from None
    addresses = [ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise OutboundRefused(f"outbound URL {display} refused: its host has no IPv4 or IPv6 address")
    return addresses
