"""One POST of a delivery: the SSRF check again on the connection itself (a name may resolve elsewhere
since it was registered; the connection goes to the address that passed), a bounded timeout, no
redirects, and an outcome that never carries the URL (it may hold a token)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import httpx

from haldir import __version__
from haldir.core.outbound import outbound_target
from haldir.errors import OutboundRefused
from haldir.proxy.pinning import OutboundPins, pinned_httpx_transport

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Sent:
    """What one POST came to: the status code of the answer, or the error that stood for one."""

    status_code: int | None
    latency_ms: int
    error: str | None


class HttpSender:
    def __init__(
        self, *, outbound_allow: Sequence[IPv4Network | IPv6Network] = (), timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._timeout = timeout
        # Plain http may reach only HALDIR_OUTBOUND_ALLOW networks, so each scheme has its own client
        # whose connections are checked accordingly; redirects are never followed, so a request
        # never changes scheme (or host) after its client was chosen.
        self._clients = {
            scheme: self._client(OutboundPins(outbound_allow, plaintext=scheme == "http"))
            for scheme in ("https", "http")
        }

    def _client(self, pins: OutboundPins) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        return httpx.AsyncClient(
            transport=pinned_httpx_transport(pins, limits=limits),
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=False,  # never through a proxy from the environment
            headers={"user-agent": f"Haldir-Webhooks/{__version__}", "content-type": "application/json"},
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Sent:
        started = time.monotonic()

        def sent(status_code: int | None, error: str | None) -> Sent:
            return Sent(status_code, int((time.monotonic() - started) * 1000), error)

        try:
            client = self._clients[outbound_target(url).scheme]
            request = client.build_request("POST", url, content=body, headers=dict(headers))
            response = await client.send(request, stream=True)  # the answer's body is never read
            await response.aclose()
        except OutboundRefused as refused:
            return sent(None, refused.message)
        except httpx.TimeoutException:
            return sent(None, f"no answer within {self._timeout:g}s")
        except httpx.ConnectError:
            return sent(None, "could not connect")
        except httpx.HTTPError as exc:  # the message may name the URL: only the kind is kept
            return sent(None, f"HTTP error ({type(exc).__name__})")
        if 300 <= response.status_code < 400:
            return sent(response.status_code, f"redirect ({response.status_code}) not followed")
        if not 200 <= response.status_code < 300:
            return sent(response.status_code, f"answered {response.status_code}")
        return sent(response.status_code, None)
