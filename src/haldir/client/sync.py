"""`HaldirClient`: the SDK over HTTP, blocking. Method names are the governor's; results are JSON objects
with money as `Decimal`."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import date
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

from haldir.client import _http
from haldir.client._http import DEFAULT_TIMEOUT, MAX_PAGE, Amount, Json, Order, Time

T = TypeVar("T")
FINISH_THREADS = 4  # outcomes in flight at once when they are recorded in the background


class HaldirClient:
    """A client of one Haldir server: `api_key` and `base_url` default to `HALDIR_API_KEY` and `HALDIR_URL`
    (else http://127.0.0.1:8000); `url=` is the older name of `base_url`.

    Results are the REST bodies as dicts, with money as exact `Decimal`s; amounts may be given as `Decimal`,
    int, float or decimal strings, and a `Decimal` anywhere in a body is sent as its decimal string. Errors
    raise the `HaldirError` subclass the server named (`NotFound`, `InsufficientScope`, …); an unreachable
    server raises `ServerUnavailable`. Close it, or use it as a context manager.

    With `background_finish=True`, governed calls (`haldir.governed`) record their outcome on a background
    thread: the tool's result comes back one round trip sooner, and the outcome reaches the ledger moments
    later. `flush()` waits for those in flight; `close()` flushes first.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        background_finish: bool = False,
    ) -> None:
        self.url, key = _http.resolve(api_key, base_url, url)
        self._client = httpx.Client(
            base_url=self.url, headers=_http.headers(key), timeout=timeout, transport=transport
        )
        self.background_finish = background_finish
        self._lock = threading.Lock()
        self._finishing: ThreadPoolExecutor | None = None
        self._pending: set[Future[Json]] = set()

    def close(self) -> None:
        """Send the outcomes still in flight, then close the connections."""
        with self._lock:
            finishing, self._finishing = self._finishing, None
        if finishing is not None:
            finishing.shutdown(wait=True)
        self._client.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every outcome handed to `finish_tool_call_soon` is sent (or failed); False when
        `timeout` seconds ran out first."""
        with self._lock:
            pending = set(self._pending)
        return not wait(pending, timeout).not_done

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, call: _http.Call[T]) -> T:
        with _http.mapped_errors(self.url):
            response = self._client.request(
                call.method,
                call.path,
                params=call.params,
                content=call.content,
                headers=call.request_headers,
            )
        return call.result(response)

    # sessions

    def create_session(
        self,
        agent_id: str,
        scopes: Sequence[str] = (),
        ttl: int | None = None,
        spend_limit: Amount | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Json:
        """A session of `agent_id` holding `scopes`, for `ttl` seconds, with a budget of `spend_limit` USD."""
        return self._send(
            _http.create_session(
                agent_id=agent_id,
                scopes=scopes,
                ttl=ttl,
                spend_limit=spend_limit,
                idempotency_key=idempotency_key,
            )
        )

    def get_session(self, session_id: str) -> Json:
        return self._send(_http.get_session(session_id))

    def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Json:
        return self._send(_http.list_sessions(agent_id=agent_id, active=active, limit=limit, cursor=cursor))

    def revoke_session(self, session_id: str) -> Json:
        return self._send(_http.revoke_session(session_id))

    def check_permission(self, session_id: str, scope: str) -> Json:
        return self._send(_http.check_permission(session_id, scope))

    # secrets

    def store_secret(
        self, name: str, value: str, scope_required: str = "read", *, idempotency_key: str | None = None
    ) -> Json:
        """Seal `value` as the next version of `name`; the answer never holds the value."""
        return self._send(
            _http.store_secret(
                name=name, value=value, scope_required=scope_required, idempotency_key=idempotency_key
            )
        )

    def get_secret(self, name: str, session_id: str, *, version: int | None = None) -> Json:
        """Release the value (latest version, or `version`) to a session holding its `scope_required`."""
        return self._send(_http.get_secret(name, session_id=session_id, version=version))

    def secret_info(self, name: str) -> Json:
        """A secret's metadata, never its value."""
        return self._send(_http.secret_info(name))

    def list_secrets(self, *, limit: int = 50, cursor: str | None = None) -> Json:
        return self._send(_http.list_secrets(limit=limit, cursor=cursor))

    def delete_secret(self, name: str) -> Json:
        return self._send(_http.delete_secret(name))

    # payments

    def authorize_payment(
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
        return self._send(
            _http.authorize_payment(
                session_id=session_id,
                amount=amount,
                currency=currency,
                description=description,
                idempotency_key=idempotency_key,
            )
        )

    def capture_payment(self, payment_id: str, *, amount: Amount | None = None) -> Json:
        return self._send(_http.capture_payment(payment_id, amount=amount))

    def void_payment(self, payment_id: str) -> Json:
        return self._send(_http.void_payment(payment_id))

    def get_payment(self, payment_id: str) -> Json:
        return self._send(_http.get_payment(payment_id))

    def list_payments(
        self, *, session_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Json:
        return self._send(_http.list_payments(session_id=session_id, limit=limit, cursor=cursor))

    # audit

    def log_action(
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
        return self._send(
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

    def get_entry(self, entry_id: str) -> Json:
        return self._send(_http.get_entry(entry_id))

    def list_entries(
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
        return self._send(
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

    def iter_entries(
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
    ) -> Iterator[Json]:
        """Every entry that matches, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_entries(
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
            yield from page["entries"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def checkpoint(self) -> str:
        """The latest checkpoint as signed note text; open it with `haldir.parse_checkpoint`."""
        return self._send(_http.checkpoint())

    def current_key(self) -> Json:
        """`{"prefix", "tenant_id", "scopes"}` of this client's key: any valid key may ask."""
        return self._send(_http.current_key())

    def usage(self, *, since: date | None = None, until: date | None = None) -> Json:
        """The ledger's counters by day and agent (UTC days, both included; default: this month)."""
        return self._send(_http.usage(since=since, until=until))

    def metrics(self) -> Json:
        """The tenant's counters now: the panel `haldir overview` draws."""
        return self._send(_http.metrics())

    def status(self) -> Json:
        """Each component of the deployment green, yellow or red, as this key sees it."""
        return self._send(_http.status())

    def tree_head(self) -> Json:
        return self._send(_http.tree_head())

    def log_key(self) -> Json:
        return self._send(_http.log_key())

    def inclusion_proof(self, entry_id: str, *, tree_size: int | None = None) -> Json:
        return self._send(_http.inclusion_proof(entry_id, tree_size=tree_size))

    def consistency_proof(self, *, first: int, second: int) -> Json:
        return self._send(_http.consistency_proof(first=first, second=second))

    def verify_log(self) -> Json:
        return self._send(_http.verify_log())

    def spend(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
    ) -> Json:
        return self._send(_http.spend(session_id=session_id, agent_id=agent_id, since=since, until=until))

    # The names the product description and the MCP tools use (getAuditTrail, getSpend).
    get_audit_trail = list_entries
    get_spend = spend

    # compliance

    def compliance_evidence(
        self,
        *,
        since: Time | date | None = None,
        until: Time | date | None = None,
        format: Literal["json", "md"] = "json",
    ) -> str:
        """The tenant's signed compliance evidence pack for [since, until) (defaults: the tenant's start,
        now), as the document the server wrote: canonical JSON, or Markdown with `format="md"`. Write it
        as is; `haldir.core.evidence.verify_evidence` checks it with the log's public key."""
        return self._send(_http.compliance_evidence(since=since, until=until, format=format))

    def check_evidence_manifest(self, pack: Json | str | bytes) -> Json:
        """Whether the server's log key signed `pack` (a JSON object, or a document in either form) and its
        checkpoint is consistent with the ledger now: `valid`, `problem`, the consistency proof."""
        return self._send(_http.check_evidence_manifest(pack))

    # webhooks

    def create_webhook(self, url: str, events: Sequence[str], description: str = "") -> Json:
        """Subscribe `url` to event types (`["*"]` for all); the answer's `secret` is shown this once."""
        return self._send(_http.create_webhook(url=url, events=events, description=description))

    def list_webhooks(self) -> Json:
        return self._send(_http.list_webhooks())

    def get_webhook(self, webhook_id: str) -> Json:
        return self._send(_http.get_webhook(webhook_id))

    def delete_webhook(self, webhook_id: str) -> Json:
        return self._send(_http.delete_webhook(webhook_id))

    def rotate_secret(self, webhook_id: str) -> Json:
        """A new signing secret, shown once; the old one also signs during the grace period."""
        return self._send(_http.rotate_secret(webhook_id))

    def enable_webhook(self, webhook_id: str) -> Json:
        """Enable a webhook disabled after a day of failures; new events go to it again."""
        return self._send(_http.enable_webhook(webhook_id))

    def test_webhook(self, webhook_id: str) -> Json:
        """Queue a `webhook.test` event for this webhook only; the delivery, pending."""
        return self._send(_http.test_webhook(webhook_id))

    def list_deliveries(
        self,
        *,
        webhook_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Json:
        """`{"deliveries", "next_cursor"}`, newest first, each with its attempts."""
        return self._send(
            _http.list_deliveries(webhook_id=webhook_id, status=status, limit=limit, cursor=cursor)
        )

    def redeliver(self, delivery_id: str) -> Json:
        """Queue a delivery again, due now."""
        return self._send(_http.redeliver(delivery_id))

    # proxy

    def register_upstream(
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
        return self._send(
            _http.register_upstream(name=name, url=url, headers=headers, command=command, args=args, env=env)
        )

    def list_upstreams(self) -> Json:
        return self._send(_http.list_upstreams())

    def delete_upstream(self, name: str) -> Json:
        return self._send(_http.delete_upstream(name))

    def refresh_upstream(self, name: str) -> Json:
        """Rediscover an upstream's tools now."""
        return self._send(_http.refresh_upstream(name))

    def list_proxy_tools(self) -> Json:
        """`{"tools"}`: every upstream tool under its aggregated name, with its pin."""
        return self._send(_http.list_proxy_tools())

    def approve_tool(self, name: str) -> Json:
        """Pin a tool's changed definition, so calls to it are admitted again."""
        return self._send(_http.approve_tool(name))

    def create_policy(self, spec: Json) -> Json:
        return self._send(_http.create_policy(spec))

    def list_policies(self) -> Json:
        return self._send(_http.list_policies())

    def delete_policy(self, policy_id: str) -> Json:
        return self._send(_http.delete_policy(policy_id))

    def call_tool(self, *, session_id: str, tool: str, arguments: Json | None = None) -> Json:
        """One governed tool call through the proxy; the upstream's `CallToolResult` as JSON."""
        return self._send(_http.call_tool(session_id=session_id, tool=tool, arguments=arguments))

    def begin_tool_call(
        self, session_id: str, tool: str, arguments: Json | None = None, *, cost_usd: Amount | None = None
    ) -> Json:
        """Admit one call of a local tool (one that runs in this process): `call_id`, the `arguments` to
        run it with (secrets substituted), the injected `secrets`' names, the `cost_usd` reserved. A
        refusal raises its `HaldirError` (`ToolDenied`, `BudgetExceeded`, `ApprovalRequired`, …).
        `haldir.governed.governed_call` runs the whole call."""
        return self._send(_http.begin_tool_call(session_id, tool, arguments, cost_usd=cost_usd))

    def finish_tool_call(
        self,
        call_id: str,
        *,
        status: str = "ok",
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> Json:
        """Record how a begun call ended: `ok` keeps its cost, `error` releases it; once per call."""
        return self._send(_http.finish_tool_call(call_id, status=status, error=error, latency_ms=latency_ms))

    def finish_tool_call_soon(
        self,
        call_id: str,
        *,
        status: str = "ok",
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> Future[Json]:
        """`finish_tool_call` on a background thread of this client, without waiting: the future holds
        its answer or its error. `flush()` and `close()` wait for it."""
        with self._lock:
            if self._finishing is None:
                self._finishing = ThreadPoolExecutor(FINISH_THREADS, thread_name_prefix="haldir-finish")
            future = self._finishing.submit(
                self.finish_tool_call, call_id, status=status, error=error, latency_ms=latency_ms
            )
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    # approvals

    def create_approval_rule(self, spec: Json) -> Json:
        """A rule holding spends or calls for a person, e.g. `{"type": "spend_over", "threshold": 100}`."""
        return self._send(_http.create_approval_rule(spec))

    def list_approval_rules(self) -> Json:
        return self._send(_http.list_approval_rules())

    def delete_approval_rule(self, rule_id: str) -> Json:
        return self._send(_http.delete_approval_rule(rule_id))

    def request_approval(
        self,
        session_id: str,
        tool: str,
        *,
        amount: Amount = 0,
        reason: str = "",
        arguments_sha256: str | None = None,
    ) -> Json:
        """Ask ahead of time for a person's approval of an action of the session; the approval."""
        return self._send(
            _http.request_approval(
                session_id=session_id,
                tool=tool,
                amount=amount,
                reason=reason,
                arguments_sha256=arguments_sha256,
            )
        )

    def get_approval(self, approval_id: str) -> Json:
        return self._send(_http.get_approval(approval_id))

    def list_pending_approvals(self, *, limit: int = 50, cursor: str | None = None) -> Json:
        """`{"approvals", "next_cursor"}`: requests waiting for a decision, oldest first."""
        return self._send(_http.list_pending_approvals(limit=limit, cursor=cursor))

    def approve(self, approval_id: str, *, note: str | None = None) -> Json:
        """Approve a pending request (not one this key asked for): the same request made again runs once."""
        return self._send(_http.decide_approval(approval_id, verb="approve", note=note))

    def deny(self, approval_id: str, *, note: str | None = None) -> Json:
        return self._send(_http.decide_approval(approval_id, verb="deny", note=note))

    # any route

    def request(
        self, method: str, path: str, json: Any = None, params: Mapping[str, object] | None = None
    ) -> Any:
        """Send any request to the server (`path` such as "/v1/proxy/upstreams", `json` a body that may hold
        `Decimal`s) with this client's key; the parsed JSON answer, money as `Decimal`, or None when empty.
        Errors raise as every method's do."""
        return self._send(_http.request(method, path, json=json, params=params))

    _request = request
