"""The governed tool call: the governor admits it, the pool forwards it, the governor records it.

`ProxyService` is the one implementation behind `POST /v1/proxy/call`, the gateway MCP server over
Streamable HTTP and, through the REST API, `haldir proxy` over stdio. It owns nothing the governor
decides; it only joins the governor (policies, budgets, ledger) to the live upstream connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import structlog

from haldir.core.keys import Principal
from haldir.core.status import UpstreamState
from haldir.core.tools import Upstream, scrub
from haldir.errors import HaldirError
from haldir.governor import Governor
from haldir.governor.proxy import Admission
from haldir.governor.registry import ProxyTool, ToolSync
from haldir.governor.upstreams import ResolvedUpstream
from haldir.proxy.upstreams import UpstreamConfig, UpstreamPool

log = structlog.get_logger("haldir.proxy")

ToolsChanged = Callable[[str], Awaitable[None]]
"""Told the tenant whose tool list changed."""

# A call's outcome is normally recorded milliseconds after its answer; one admitted longer ago than this
# with no outcome was lost with a stopped server (calls wait at most 90 s for their upstream).
OUTCOME_GRACE = timedelta(minutes=5)
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class _Connection:
    """What the pool needs for one upstream, with its secrets substituted, and the values to scrub."""

    fingerprint: str
    config: UpstreamConfig
    injected: dict[str, str]


class ProxyService:
    def __init__(self, governor: Governor, pool: UpstreamPool) -> None:
        self._governor = governor
        self._pool = pool
        self._connections: dict[tuple[str, str], _Connection] = {}
        self._listeners: dict[object, ToolsChanged] = {}
        self._finishing: set[asyncio.Task[None]] = set()  # outcomes being recorded
        self.decision_listeners: list[Callable[[str], None]] = []  # "allowed" or the refusal's code

    # calls

    async def call_tool(
        self, principal: Principal, *, session_id: str, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Admit, forward and record one `tools/call`; the upstream's result with injected secrets scrubbed.

        A refusal raises the governor's denial error (already in the ledger). The admission is durable
        before the call is forwarded; its outcome (ok or error, the cost kept or released) is recorded
        after the answer, off the caller's path, and even if the caller goes away mid-flight. If the
        server stops in between, a sweep later records the call's outcome as unknown
        (`Proxy.close_stale_calls`). An upstream that cannot be used (refused by the operator's rule, a
        missing secret) ends the call as an error, so its reserved cost is released.
        """
        admission = await self._decided(
            self._governor.proxy.admit_call(principal, session_id=session_id, tool=tool, arguments=arguments)
        )
        secrets = dict(admission.injected)
        started = time.perf_counter()
        try:
            connection = await self._connection(principal.tenant_id, admission.upstream or "")
            secrets = {**connection.injected, **admission.injected}
            result = await self._pool.call_tool(
                principal.tenant_id, connection.config, admission.tool_name, admission.arguments
            )
        except HaldirError as exc:
            self._finish(principal, admission, None, scrub(exc.message, secrets), started)
            raise type(exc)(scrub(exc.message, secrets), **scrub(exc.details, secrets)) from None
        except BaseException:
            self._finish(principal, admission, None, "call cancelled", started)
            raise
        result = scrub(result, secrets)
        self._finish(principal, admission, result, None, started)
        return result

    async def begin_local_call(
        self,
        principal: Principal,
        *,
        session_id: str,
        tool: str,
        arguments: dict[str, Any],
        cost_micros: int = 0,
    ) -> Admission:
        """Admit a call of a tool that runs in the agent's own process (`Proxy.admit_local_call`),
        counted with the proxy's decisions; the agent runs it and reports how it ended."""
        return await self._decided(
            self._governor.proxy.admit_local_call(
                principal, session_id=session_id, tool=tool, arguments=arguments, cost_micros=cost_micros
            )
        )

    async def _decided(self, admitting: Awaitable[Admission]) -> Admission:
        """The admission, once the decision ("allowed", or the refusal's code) is told to the listeners."""
        try:
            admission = await admitting
        except HaldirError as exc:
            self._tell(exc.code)
            raise
        self._tell("allowed")
        return admission

    def _tell(self, decision: str) -> None:
        for listener in self.decision_listeners:
            listener(decision)

    def _finish(
        self,
        principal: Principal,
        admission: Admission,
        result: dict[str, Any] | None,
        error: str | None,
        started: float,
    ) -> None:
        """Record the call's outcome in the background: it joins a later group commit."""
        latency = _ms(started)

        async def record() -> None:
            try:
                await self._governor.proxy.finish_call(
                    principal, admission, result=result, error=error, latency_ms=latency
                )
            except Exception:  # the admission stays open: the sweep records its outcome as unknown
                log.exception("proxy.finish_failed", call_id=admission.call_id)

        task = asyncio.get_running_loop().create_task(record(), name=f"haldir-finish-{admission.call_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def settled(self) -> None:
        """Wait until the outcomes of the calls answered so far are recorded."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)

    async def sweep(self, *, every: float = SWEEP_SECONDS, older_than: timedelta = OUTCOME_GRACE) -> None:
        """Record "outcome unknown" for calls a stopped server admitted and never finished, now and then
        every `every` seconds, until cancelled."""
        while True:
            try:
                closed = await self._governor.proxy.close_stale_calls(older_than=older_than)
                if closed:
                    log.warning("proxy.outcomes_unknown", calls=closed)
            except HaldirError as exc:
                log.warning("proxy.sweep_failed", code=exc.code)
            await asyncio.sleep(every)

    # upstreams and their tools

    async def register(self, principal: Principal, **config: Any) -> tuple[Any, ToolSync]:
        """Register an upstream and discover its tools through a real MCP handshake.

        An upstream that cannot be reached is not kept: registration fails with `upstream_unavailable`.
        """
        upstream = await self._governor.registry.register_upstream(principal, **config)
        try:
            synced = await self.refresh(principal, upstream.name)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._governor.registry.delete_upstream(principal, upstream.name)
            raise
        return upstream, synced

    async def refresh(self, principal: Principal, name: str) -> ToolSync:
        """Rediscover an upstream's tools now; pins and change flags are the governor's."""
        upstream = await self._governor.registry.upstream_to_refresh(principal, name)
        return await self._sync(principal.tenant_id, upstream.name)

    async def delete(self, principal: Principal, name: str) -> Upstream:
        """Remove an upstream: its tools leave the tenant's list and its connection closes."""
        upstream = await self._governor.registry.delete_upstream(principal, name)
        self._connections.pop((principal.tenant_id, name), None)
        await self._pool.drop(principal.tenant_id, name)
        await self._notify(principal.tenant_id)
        return upstream

    async def approve(self, principal: Principal, name: str) -> ProxyTool:
        """Pin a changed tool's new definition; clients hear their tool list changed."""
        tool: ProxyTool = await self._governor.registry.approve_tool(principal, name)
        await self._notify(principal.tenant_id)
        return tool

    async def tools(self, principal: Principal) -> list[ProxyTool]:
        tools: list[ProxyTool] = await self._governor.registry.list_proxy_tools(principal)
        return tools

    async def upstream_states(self, principal: Principal) -> list[UpstreamState] | None:
        """The tenant's upstreams as this process's connections know them; None without `proxy:read`."""
        if not principal.holds("proxy:read"):
            return None
        upstreams = await self._governor.registry.list_upstreams(principal)
        return [self._pool.state(principal.tenant_id, upstream.name) for upstream in upstreams]

    async def upstream_tools_changed(self, tenant_id: str, name: str) -> None:
        """The pool heard `notifications/tools/list_changed` from an upstream: rediscover it."""
        try:
            await self._sync(tenant_id, name)
        except HaldirError as exc:
            log.warning("proxy.refresh_failed", tenant_id=tenant_id, upstream=name, code=exc.code)

    async def _sync(self, tenant_id: str, name: str) -> ToolSync:
        resolved: ResolvedUpstream = await self._governor.registry.upstream_for_connect(tenant_id, name)
        connection = self._remember(tenant_id, resolved)
        definitions = await self._pool.list_tools(tenant_id, connection.config)
        synced: ToolSync = await self._governor.registry.record_tools(tenant_id, name, definitions)
        if synced.added or synced.changed or synced.reverted or synced.removed:
            await self._notify(tenant_id)
        return synced

    async def _connection(self, tenant_id: str, name: str) -> _Connection:
        found = self._connections.get((tenant_id, name))
        fingerprint = await self._governor.registry.upstream_fingerprint(tenant_id, name)
        if found is not None and found.fingerprint == fingerprint:
            return found
        return self._remember(tenant_id, await self._governor.registry.upstream_for_connect(tenant_id, name))

    def _remember(self, tenant_id: str, resolved: ResolvedUpstream) -> _Connection:
        upstream = resolved.upstream
        connection = _Connection(
            fingerprint=resolved.fingerprint,
            config=UpstreamConfig(
                name=upstream.name,
                transport=upstream.transport,
                url=upstream.url,
                headers=resolved.headers,
                command=upstream.command,
                args=list(upstream.args),
                env=resolved.env,
                fingerprint=resolved.fingerprint,
            ),
            injected=resolved.injected,
        )
        self._connections[(tenant_id, upstream.name)] = connection
        return connection

    # tool-change listeners (the gateway tells its MCP clients)

    def subscribe(self, listener: ToolsChanged) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    async def _notify(self, tenant_id: str) -> None:
        for listener in list(self._listeners.values()):
            try:
                await listener(tenant_id)
            except Exception:  # one broken client stream must not stop the others hearing of the change
                log.exception("proxy.notify_failed", tenant_id=tenant_id)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
