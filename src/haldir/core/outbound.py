"""Where this server may connect: the pure half of the SSRF check on outbound URLs (upstreams, webhooks).

`refusal` decides on one resolved address; `outbound_target` checks a URL's shape. Resolving the host
is I/O and lives in `haldir.proxy.outbound.check_outbound_url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from haldir.errors import OutboundRefused

__all__ = ["METADATA_ADDRESSES", "OutboundTarget", "outbound_target", "refusal"]

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Cloud instance-metadata endpoints hand out credentials; no allow-list entry may open them.
# AWS (IMDS, ECS task v2/v4), GCP and Azure share 169.254.169.254; Alibaba 100.100.100.200;
# Oracle 192.0.0.192; AWS IMDS over IPv6 fd00:ec2::254.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ip_address(text)
    for text in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    )
)

_SHARED = ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are an IPv4 address
_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALLOW_HINT = "to allow it, add its network to HALDIR_OUTBOUND_ALLOW"


@dataclass(frozen=True)
class OutboundTarget:
    """What the check needs of an outbound URL; `display` is safe to print (no userinfo, path, query)."""

    scheme: str
    host: str
    port: int
    display: str


def outbound_target(url: str) -> OutboundTarget:
    """The scheme, host and port of `url`, or `OutboundRefused` when it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError:
        raise OutboundRefused("outbound URL refused: it is not a valid URL") from None
    if scheme not in _SCHEMES:
        shown = scheme or "none"
        raise OutboundRefused(f"outbound URL refused: scheme {shown!r} is not allowed; use http or https")
    if not host:
        raise OutboundRefused(
            f"outbound URL refused: a {scheme} URL needs a host, e.g. {scheme}://mcp.example.com"
        )
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    shown_host = f"[{host}]" if ":" in host else host
    return OutboundTarget(scheme=scheme, host=host, port=port, display=f"{scheme}://{shown_host}:{port}")


def refusal(address: IPAddress | str, allow: Sequence[Network]) -> str | None:
    """Why this server must not connect to `address`, or None when it may.

    1. A cloud metadata address is refused always, in any spelling (IPv4-mapped, NAT64, 6to4).
    2. An address inside an `allow` network is allowed.
    3. Any address that is not globally routable (private, loopback, link-local, unspecified,
       multicast, reserved, shared) is refused; so is a global IPv6 address that embeds one.
    """
    address = ip_address(address) if isinstance(address, str) else address
    candidates = [address, *_embedded_ipv4(address)]
    # 1
    for candidate in candidates:
        if _plain(candidate) in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address; those are always refused"
    # 2
    if any(_plain(candidate) in network for candidate in candidates for network in allow):
        return None
    # 3 (an embedded IPv4 address names the real destination, so it is reported first)
    for candidate in reversed(candidates):
        kind = _special_kind(candidate)
        if kind is not None:
            embedded = "" if candidate is address else f" (it embeds {candidate})"
            return f"{address} is {kind} address{embedded}; {_ALLOW_HINT}"
    return None


def _plain(address: IPAddress) -> IPAddress:
    """The address without an IPv6 zone id, so set and network membership compare by value."""
    if isinstance(address, IPv6Address) and address.scope_id:
        return IPv6Address(address.packed)
    return address


def _embedded_ipv4(address: IPAddress) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 address reaches: IPv4-mapped, NAT64 well-known prefix, 6to4."""
    if not isinstance(address, IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if _plain(address) in _NAT64:
        found.append(IPv4Address(address.packed[-4:]))
    return [candidate for candidate in found if candidate is not None]


def _special_kind(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "an unspecified"
    if address.is_loopback:
        return "a loopback"
    if address.is_link_local:
        return "a link-local"
    if address.is_multicast:
        return "a multicast"
    if isinstance(address, IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT)"
    if address.is_reserved:
        return "a reserved"
    if address.is_private:
        return "a private"
    if not address.is_global:
        return "a non-global"
    return None
