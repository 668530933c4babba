"""`AsyncHaldirClient`: the SDK over HTTP for asyncio, the twin of `HaldirClient` method for method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

from haldir.client import _http
from haldir.client._http import DEFAULT_TIMEOUT, MAX_PAGE, Amount, Json, Order, Time

T = TypeVar("T")


class AsyncHaldirClient:
    """A client of one Haldir server: `api_key` and `base_url` default to `HALDIR_API_KEY` and `HALDIR_URL`
    (else http://127.0.0.1:8000); `url=` is the older name of `base_url`.

    Results are the REST bodies as dicts, with money as exact `Decimal`s; amounts may be given as `Decimal`,
    int, float or decimal strings, and a `Decimal` anywhere in a body is sent as its decimal string. Errors
    raise the `HaldirError` subclass the server named (`NotFound`, `InsufficientScope`, …); an unreachable
    server raises `ServerUnavailable`. Close it with `aclose()`, or use `async with`.

    With `background_finish=True`, governed calls (`haldir.governed`) record their outcome in a task of
    their own: the tool's result comes back one round trip sooner, and the outcome reaches the ledger
    moments later. `flush()` waits for those in flight; `aclose()` flushes first.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        background_finish: bool = False,
    ) -> None:
        self.url, key = _http.resolve(api_key, base_url, url)
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=_http.headers(key), timeout=timeout, transport=transport
        )
        self.background_finish = background_finish
        self._pending: set[asyncio.Task[Json]] = set()

    async def aclose(self) -> None:
        """Send the outcomes still in flight, then close the connections."""
        await self.flush()
        await self._client.aclose()

    async def flush(self) -> None:
        """Wait until every outcome handed to `finish_tool_call_soon` is sent (or failed); bound the
        wait with `asyncio.timeout`."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, call: _http.Call[T]) -> T:
        with _http.mapped_errors(self.url):
            response = await self._client.request(
                call.method,
                call.path,
                params=call.params,
                content=call.content,
                headers=call.request_headers,
            )
        return call.result(response)

    # sessions

    async def create_session(
        self,
        agent_id: str,
        scopes: Sequence[str] = (),
        ttl: int | None = None,
        spend_limit: Amount | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Json:
        """A session of `agent_id` holding `scopes`, for `ttl` seconds, with a budget of `spend_limit` USD."""
        return await self._send(
            _http.create_session(
                agent_id=agent_id,
                scopes=scopes,
                ttl=ttl,
                spend_limit=spend_limit,
                idempotency_key=idempotency_key,
            )
        )

    async def get_session(self, session_id: str) -> Json:
        return await self._send(_http.get_session(session_id))

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Json:
        return await self._send(
            _http.list_sessions(agent_id=agent_id, active=active, limit=limit, cursor=cursor)
        )

    async def revoke_session(self, session_id: str) -> Json:
        return await self._send(_http.revoke_session(session_id))

    async def check_permission(self, session_id: str, scope: str) -> Json:
        return await self._send(_http.check_permission(session_id, scope))

    # secrets

    async def store_secret(
        self, name: str, value: str, scope_required: str = "read", *, idempotency_key: str | None = None
    ) -> Json:
        """Seal `value` as the next version of `name`; the answer never holds the value."""
        return await self._send(
            _http.store_secret(
                name=name, value=value, scope_required=scope_required, idempotency_key=idempotency_key
            )
        )

    async def get_secret(self, name: str, session_id: str, *, version: int | None = None) -> Json:
        """Release the value (latest version, or `version`) to a session holding its `scope_required`."""
        return await self._send(_http.get_secret(name, session_id=session_id, version=version))

    async def secret_info(self, name: str) -> Json:
        """A secret's metadata, never its value."""
        return await self._send(_http.secret_info(name))

    async def list_secrets(self, *, limit: int = 50, cursor: str | None = None) -> Json:
        return await self._send(_http.list_secrets(limit=limit, cursor=cursor))

    async def delete_secret(self, name: str) -> Json:
        return await self._send(_http.delete_secret(name))

    # payments

    async def authorize_payment(
        self,
        session_id: str,
        amount: Amount,
        currency: str = "USD",
        description: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> Json:
        """Reserve `amount` (a `Decimal`, int, float or decimal string) of the session's budget;
        `BudgetExceeded` when it does not fit."""
        return await self._send(
            _http.authorize_payment(
                session_id=session_id,
                amount=amount,
                currency=currency,
                description=description,
                idempotency_key=idempotency_key,
            )
        )

    async def capture_payment(self, payment_id: str, *, amount: Amount | None = None) -> Json:
        return await self._send(_http.capture_payment(payment_id, amount=amount))

    async def void_payment(self, payment_id: str) -> Json:
        return await self._send(_http.void_payment(payment_id))

    async def get_payment(self, payment_id: str) -> Json:
        return await self._send(_http.get_payment(payment_id))

    async def list_payments(
        self, *, session_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Json:
        return await self._send(_http.list_payments(session_id=session_id, limit=limit, cursor=cursor))

    # audit

    async def log_action(
        self,
        session_id: str,
        tool: str,
        action: str,
        cost_usd: Amount = 0,
        details: Json | None = None,
        *,
        status: str = "ok",
        authorization_id: str | None = None,
    ) -> Json:
        """Append an action of the session to the ledger; a `cost_usd` above zero counts against its budget
        (`authorization_id`: against that payment). `details` is kept exactly as sent."""
        return await self._send(
            _http.log_action(
                session_id=session_id,
                tool=tool,
                action=action,
                cost_usd=cost_usd,
                details=details,
                status=status,
                authorization_id=authorization_id,
            )
        )

    async def get_entry(self, entry_id: str) -> Json:
        return await self._send(_http.get_entry(entry_id))

    async def list_entries(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        since: Time | None = None,
        until: Time | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: Order = "desc",
    ) -> Json:
        """One page, `{"entries", "next_cursor"}`: newest first, or in leaf order with `order="asc"`."""
        return await self._send(
            _http.list_entries(
                session_id=session_id,
                agent_id=agent_id,
                tool=tool,
                status=status,
                flagged=flagged,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
                order=order,
            )
        )

    async def iter_entries(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        since: Time | None = None,
        until: Time | None = None,
        order: Order = "desc",
        page_size: int = MAX_PAGE,
    ) -> AsyncIterator[Json]:
        """Every entry that matches, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_entries(
                session_id=session_id,
                agent_id=agent_id,
                tool=tool,
                status=status,
                flagged=flagged,
                since=since,
                until=until,
                limit=page_size,
                cursor=cursor,
                order=order,
            )
            for entry in page["entries"]:
                yield entry
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def checkpoint(self) -> str:
        """The latest checkpoint as signed note text; open it with `haldir.parse_checkpoint`."""
        return await self._send(_http.checkpoint())

    async def current_key(self) -> Json:
        """`{"prefix", "tenant_id", "scopes"}` of this client's key: any valid key may ask."""
        return await self._send(_http.current_key())

    async def usage(self, *, since: date | None = None, until: date | None = None) -> Json:
        """The ledger's counters by day and agent (UTC days, both included; default: this month)."""
        return await self._send(_http.usage(since=since, until=until))

    async def metrics(self) -> Json:
        """The tenant's counters now: the panel `haldir overview` draws."""
        return await self._send(_http.metrics())

    async def status(self) -> Json:
        """Each component of the deployment green, yellow or red, as this key sees it."""
        return await self._send(_http.status())

    async def tree_head(self) -> Json:
        return await self._send(_http.tree_head())

    async def log_key(self) -> Json:
        return await self._send(_http.log_key())

    async def inclusion_proof(self, entry_id: str, *, tree_size: int | None = None) -> Json:
        return await self._send(_http.inclusion_proof(entry_id, tree_size=tree_size))

    async def consistency_proof(self, *, first: int, second: int) -> Json:
        return await self._send(_http.consistency_proof(first=first, second=second))

    async def verify_log(self) -> Json:
        return await self._send(_http.verify_log())

    async def spend(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
    ) -> Json:
        return await self._send(
            _http.spend(session_id=session_id, agent_id=agent_id, since=since, until=until)
        )

    # The names the product description and the MCP tools use (getAuditTrail, getSpend).
    get_audit_trail = list_entries
    get_spend = spend

    # compliance

    async def compliance_evidence(
        self,
        *,
        since: Time | date | None = None,
        until: Time | date | None = None,
        format: Literal["json", "md"] = "json",
    ) -> str:
        """The tenant's signed compliance evidence pack for [since, until) (defaults: the tenant's start,
        now), as the document the server wrote: canonical JSON, or Markdown with `format="md"`. Write it
        as is; `haldir.core.evidence.verify_evidence` checks it with the log's public key."""
        return await self._send(_http.compliance_evidence(since=since, until=until, format=format))

    async def check_evidence_manifest(self, pack: Json | str | bytes) -> Json:
        """Whether the server's log key signed `pack` (a JSON object, or a document in either form) and its
        checkpoint is consistent with the ledger now: `valid`, `problem`, the consistency proof."""
        return await self._send(_http.check_evidence_manifest(pack))

    # webhooks

    async def create_webhook(self, url: str, events: Sequence[str], description: str = "") -> Json:
        """Subscribe `url` to event types (`["*"]` for all); the answer's `secret` is shown this once."""
        return await self._send(_http.create_webhook(url=url, events=events, description=description))

    async def list_webhooks(self) -> Json:
        return await self._send(_http.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> Json:
        return await self._send(_http.get_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: str) -> Json:
        return await self._send(_http.delete_webhook(webhook_id))

    async def rotate_secret(self, webhook_id: str) -> Json:
        """A new signing secret, shown once; the old one also signs during the grace period."""
        return await self._send(_http.rotate_secret(webhook_id))

    async def enable_webhook(self, webhook_id: str) -> Json:
        """Enable a webhook disabled after a day of failures; new events go to it again."""
        return await self._send(_http.enable_webhook(webhook_id))

    async def test_webhook(self, webhook_id: str) -> Json:
        """Queue a `webhook.test` event for this webhook only; the delivery, pending."""
        return await self._send(_http.test_webhook(webhook_id))

    async def list_deliveries(
        self,
        *,
        webhook_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Json:
        """`{"deliveries", "next_cursor"}`, newest first, each with its attempts."""
        return await self._send(
            _http.list_deliveries(webhook_id=webhook_id, status=status, limit=limit, cursor=cursor)
        )

    async def redeliver(self, delivery_id: str) -> Json:
        """Queue a delivery again, due now."""
        return await self._send(_http.redeliver(delivery_id))

    # proxy

    async def register_upstream(
        self,
        *,
        name: str,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        command: str | None = None,
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Json:
        """Register an upstream MCP server (`url`, or `command` for stdio) and discover its tools."""
        return await self._send(
            _http.register_upstream(name=name, url=url, headers=headers, command=command, args=args, env=env)
        )

    async def list_upstreams(self) -> Json:
        return await self._send(_http.list_upstreams())

    async def delete_upstream(self, name: str) -> Json:
        return await self._send(_http.delete_upstream(name))

    async def refresh_upstream(self, name: str) -> Json:
        """Rediscover an upstream's tools now."""
        return await self._send(_http.refresh_upstream(name))

    async def list_proxy_tools(self) -> Json:
        """`{"tools"}`: every upstream tool under its aggregated name, with its pin."""
        return await self._send(_http.list_proxy_tools())

    async def approve_tool(self, name: str) -> Json:
        """Pin a tool's changed definition, so calls to it are admitted again."""
        return await self._send(_http.approve_tool(name))

    async def create_policy(self, spec: Json) -> Json:
        return await self._send(_http.create_policy(spec))

    async def list_policies(self) -> Json:
        return await self._send(_http.list_policies())

    async def delete_policy(self, policy_id: str) -> Json:
        return await self._send(_http.delete_policy(policy_id))

    async def call_tool(self, *, session_id: str, tool: str, arguments: Json | None = None) -> Json:
        """One governed tool call through the proxy; the upstream's `CallToolResult` as JSON."""
        return await self._send(_http.call_tool(session_id=session_id, tool=tool, arguments=arguments))

    async def begin_tool_call(
        self, session_id: str, tool: str, arguments: Json | None = None, *, cost_usd: Amount | None = None
    ) -> Json:
        """Admit one call of a local tool (one that runs in this process): `call_id`, the `arguments` to
        run it with (secrets substituted), the injected `secrets`' names, the `cost_usd` reserved. A
        refusal raises its `HaldirError` (`ToolDenied`, `BudgetExceeded`, `ApprovalRequired`, …).
        `haldir.governed.governed_call` runs the whole call."""
        return await self._send(_http.begin_tool_call(session_id, tool, arguments, cost_usd=cost_usd))

    async def finish_tool_call(
        self,
        call_id: str,
        *,
        status: str = "ok",
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> Json:
        """Record how a begun call ended: `ok` keeps its cost, `error` releases it; once per call."""
        return await self._send(
            _http.finish_tool_call(call_id, status=status, error=error, latency_ms=latency_ms)
        )

    def finish_tool_call_soon(
        self,
        call_id: str,
        *,
        status: str = "ok",
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> asyncio.Task[Json]:
        """`finish_tool_call` in a task of its own, without waiting: the task holds its answer or its
        error. `flush()` and `aclose()` wait for it."""
        task = asyncio.create_task(
            self.finish_tool_call(call_id, status=status, error=error, latency_ms=latency_ms)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    # approvals

    async def create_approval_rule(self, spec: Json) -> Json:
        """A rule holding spends or calls for a person, e.g. `{"type": "spend_over", "threshold": 100}`."""
        return await self._send(_http.create_approval_rule(spec))

    async def list_approval_rules(self) -> Json:
        return await self._send(_http.list_approval_rules())

    async def delete_approval_rule(self, rule_id: str) -> Json:
        return await self._send(_http.delete_approval_rule(rule_id))

    async def request_approval(
        self,
        session_id: str,
        tool: str,
        *,
        amount: Amount = 0,
        reason: str = "",
        arguments_sha256: str | None = None,
    ) -> Json:
        """Ask ahead of time for a person's approval of an action of the session; the approval."""
        return await self._send(
            _http.request_approval(
                session_id=session_id,
                tool=tool,
                amount=amount,
                reason=reason,
                arguments_sha256=arguments_sha256,
            )
        )

    async def get_approval(self, approval_id: str) -> Json:
        return await self._send(_http.get_approval(approval_id))

    async def list_pending_approvals(self, *, limit: int = 50, cursor: str | None = None) -> Json:
        """`{"approvals", "next_cursor"}`: requests waiting for a decision, oldest first."""
        return await self._send(_http.list_pending_approvals(limit=limit, cursor=cursor))

    async def approve(self, approval_id: str, *, note: str | None = None) -> Json:
        """Approve a pending request (not one this key asked for): the same request made again runs once."""
        return await self._send(_http.decide_approval(approval_id, verb="approve", note=note))

    async def deny(self, approval_id: str, *, note: str | None = None) -> Json:
        return await self._send(_http.decide_approval(approval_id, verb="deny", note=note))

    # any route

    async def request(
        self, method: str, path: str, json: Any = None, params: Mapping[str, object] | None = None
    ) -> Any:
        """Send any request to the server (`path` such as "/v1/proxy/upstreams", `json` a body that may hold
        `Decimal`s) with this client's key; the parsed JSON answer, money as `Decimal`, or None when empty.
        Errors raise as every method's do."""
        return await self._send(_http.request(method, path, json=json, params=params))

    _request = request
