"""Write load on a real server that is killed with SIGKILL mid-write, and the checks that every write it
acknowledged survived whole. Shared by tests/e2e/test_crash.py (a few kills) and bench/crash.py (many).

Five writers run at once, one per kind (audit entries, payments, secret versions, governed local tool
calls with an injected secret, and proxied calls of a real stdio MCP server, `mcp-server-time`, at a
policy's cost), with a sixth thread reading signed tree heads. After each restart:

1. the server verifies its whole ledger;
2. every checkpoint seen before the kill verifies, and a consistency proof from it to the new head
   verifies with the core verifier (no acknowledged leaf was lost or rewritten);
3. every acknowledged write is there, with the hash, amount or value acknowledged;
4. nothing unacknowledged is half there: each payment row has its ledger entry and the reverse; every
   secret version opens to a value that was sent; every admitted call in the ledger has its open call
   (finishing it succeeds) and each call is finished at most once; every proxied call answered has its
   outcome entry, and at most the one call in flight at the kill was admitted without one;
5. each session's `spent` equals the sum of its entries' `charged_usd`.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from haldir.core.checkpoints import Verifier, parse_checkpoint
from haldir.core.merkle import verify_consistency
from tests.e2e.server import HALDIR

KINDS = ("audit", "payment", "secret", "tool", "proxy")
TOOL_SECRET = "crash-tool-key"
TIME_COMMAND = str(Path(HALDIR).with_name("mcp-server-time"))
PROXIED = "get_current_time"
_TIMEOUT = 30.0


@dataclass
class Round:
    """What the writers sent and the server acknowledged while one server process lived."""

    sessions: dict[str, str] = field(default_factory=dict)  # session id -> kind
    audit: dict[str, dict[str, Any]] = field(default_factory=dict)  # entry id -> acknowledgement
    payments: dict[str, str] = field(default_factory=dict)  # authorization id -> amount
    secrets: list[tuple[str, int, str]] = field(default_factory=list)  # (name, version, value)
    begun: dict[str, str] = field(default_factory=dict)  # call id -> admission entry id
    finished: dict[str, str] = field(default_factory=dict)  # call id -> outcome entry id
    proxied: int = 0  # proxied calls answered (their answer carries no id)
    heads: list[tuple[int, bytes]] = field(default_factory=list)  # signed (tree size, root) seen
    errors: list[str] = field(default_factory=list)  # answers that were neither 2xx nor a dead server

    def acknowledged(self) -> Counter[str]:
        return Counter(
            audit=len(self.audit),
            payment=len(self.payments),
            secret=len(self.secrets),
            tool=len(self.begun) + len(self.finished),
            proxy=self.proxied,
        )


@dataclass
class History:
    """Every round of one data dir, and every secret value ever sent (acknowledged or not)."""

    key: str
    verifier: Verifier
    rounds: list[Round] = field(default_factory=list)
    sent_values: dict[str, set[str]] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)  # per secret, the versions checked so far
    lock: threading.Lock = field(default_factory=threading.Lock)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def prepare(url: str, key: str) -> History:
    """The log's verifier and the secret the tool calls inject, on a freshly started server."""
    with httpx.Client(base_url=url, headers=auth(key), timeout=_TIMEOUT) as client:
        vkey = _ok(client.get("/v1/audit/log-key"))["vkey"]
        _ok(client.post("/v1/secrets", json={"name": TOOL_SECRET, "value": "tool-" + secrets.token_hex(8)}))
        _ok(client.post("/v1/proxy/upstreams", json={"name": "clock", "command": TIME_COMMAND}))
        _ok(
            client.post("/v1/proxy/policies", json={"type": "tool_cost", "tool": PROXIED, "cost_usd": "0.03"})
        )
    return History(key=key, verifier=Verifier.from_vkey(vkey))


def load_until_killed(url: str, history: History, kill: Callable[[], None], *, delay: float) -> Round:
    """Run the writers against `url`, call `kill()` after `delay` seconds, and return what was
    acknowledged once every writer has seen the server die."""
    current = Round()
    history.rounds.append(current)
    with httpx.Client(base_url=url, headers=auth(history.key), timeout=_TIMEOUT) as client:
        for kind in KINDS:
            made = client.post(
                "/v1/sessions",
                json={
                    "agent_id": f"crash-{kind}",
                    "scopes": ["read", "execute", "spend"],
                    "spend_limit": "1e6",
                },
            )
            current.sessions[_ok(made)["session_id"]] = kind
        # Each server process starts its stdio upstream at its first call, which takes longer than many
        # kill delays: start it before the clock runs, so that proxied calls are in flight at the kill.
        proxy_session = next(s for s, k in current.sessions.items() if k == "proxy")
        _proxy(client, history, current, proxy_session, 0)
    stop = threading.Event()
    writers = [
        threading.Thread(target=_write, args=(url, history, current, kind, stop), daemon=True)
        for kind in (*KINDS, "heads")
    ]
    for writer in writers:
        writer.start()
    time.sleep(delay)  # load runs for a random time before the kill: the moment is the point
    kill()
    stop.set()
    for writer in writers:
        writer.join(timeout=60)
    return current


def _write(url: str, history: History, current: Round, kind: str, stop: threading.Event) -> None:
    session_id = next((s for s, k in current.sessions.items() if k == kind), "")
    step = {
        "audit": _audit,
        "payment": _payment,
        "secret": _secret,
        "tool": _tool,
        "proxy": _proxy,
        "heads": _head,
    }[kind]
    with httpx.Client(base_url=url, headers=auth(history.key), timeout=_TIMEOUT) as client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                step(client, history, current, session_id, n)
            except httpx.TransportError:
                return  # the server died under this request: it is unacknowledged
            except _Refused as exc:
                current.errors.append(f"{kind}: {exc}")
                return


class _Refused(Exception):
    pass


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code // 100 != 2:
        raise _Refused(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


def _audit(client: httpx.Client, _h: History, current: Round, session_id: str, n: int) -> None:
    body = {
        "session_id": session_id,
        "tool": "crash",
        "action": "write",
        "cost_usd": "0.01",
        "details": {"n": n},
    }
    made = _ok(client.post("/v1/audit", json=body))
    current.audit[made["entry_id"]] = made


def _payment(client: httpx.Client, _h: History, current: Round, session_id: str, n: int) -> None:
    amount = f"0.{n % 90 + 10:02d}"
    made = _ok(
        client.post(
            "/v1/payments/authorize",
            json={"session_id": session_id, "amount": amount, "description": f"crash {n}"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    )
    current.payments[made["authorization_id"]] = made["amount"]


def _secret(client: httpx.Client, history: History, current: Round, _s: str, n: int) -> None:
    name, value = f"crash-{n % 4}", secrets.token_urlsafe(24)
    with history.lock:
        history.sent_values.setdefault(name, set()).add(value)
    made = _ok(client.post("/v1/secrets", json={"name": name, "value": value}))
    current.secrets.append((name, int(made["version"]), value))


def _tool(client: httpx.Client, _h: History, current: Round, session_id: str, n: int) -> None:
    arguments = {"q": f"n{n}", "token": f"Bearer {{{{secret:{TOOL_SECRET}}}}}"}
    begun = _ok(
        client.post(
            "/v1/tools/lookup/begin",
            json={"session_id": session_id, "arguments": arguments, "cost_usd": "0.02"},
        )
    )
    current.begun[begun["call_id"]] = begun["entry_id"]
    status = "error" if n % 3 == 0 else "ok"
    finished = _ok(client.post(f"/v1/tools/calls/{begun['call_id']}/finish", json={"status": status}))
    current.finished[begun["call_id"]] = finished["entry_id"]


def _proxy(client: httpx.Client, _h: History, current: Round, session_id: str, _n: int) -> None:
    call = {"session_id": session_id, "tool": PROXIED, "arguments": {"timezone": "UTC"}}
    answered = _ok(client.post("/v1/proxy/call", json=call))
    if answered.get("isError"):
        raise _Refused(f"the upstream failed: {answered}")
    current.proxied += 1


def _head(client: httpx.Client, history: History, current: Round, _s: str, _n: int) -> None:
    head = _ok(client.get("/v1/audit/tree-head"))
    checkpoint = parse_checkpoint(head["checkpoint"], history.verifier)
    if checkpoint.tree_size:
        current.heads.append((checkpoint.tree_size, checkpoint.root_hash))
    time.sleep(0.05)  # a client polling the log, not a busy loop


@dataclass
class Found:
    """Per kind, how many acknowledged writes the checks found whole after a restart."""

    found: Counter[str] = field(default_factory=Counter)
    checkpoints: int = 0
    sessions: int = 0
    versions: int = 0  # secret versions opened (acknowledged or not), each to a value that was sent
    reopened_calls: int = 0  # admitted local calls whose finish a kill swallowed, finished after the restart
    outcomes_pending: int = 0  # proxied calls admitted whose outcome a kill lost (the sweep's to record)
    problems: list[str] = field(default_factory=list)


def check(url: str, history: History, rounds: list[Round], *, every_version: bool = False) -> Found:
    """Run checks 1-5 of the module docstring over `rounds`; problems are collected, not raised. Secret
    versions are opened from the first one not opened by an earlier check, or all with `every_version`
    (each release is a durable write of its own)."""
    found = Found()
    with httpx.Client(base_url=url, headers=auth(history.key), timeout=_TIMEOUT) as client:
        # Check 1: the server verifies its whole log.
        verified = _ok(client.get("/v1/audit/verify"))
        if not verified["ok"]:
            found.problems.append(f"the ledger fails verification: {verified.get('first_bad')}")
        # Check 2: consistency from every checkpoint seen before to the new head.
        head = parse_checkpoint(_ok(client.get("/v1/audit/tree-head"))["checkpoint"], history.verifier)
        for size, root in sorted({h for r in rounds for h in r.heads}):
            found.checkpoints += 1
            _consistent(client, size, root, head.tree_size, head.root_hash, found.problems)
        for current in rounds:
            _check_round(client, history, current, found)
        reader = next(s for s, k in rounds[-1].sessions.items() if k == "secret")
        _check_versions(client, history, reader, found, every_version=every_version)
    return found


def _check_versions(
    client: httpx.Client, history: History, reader: str, found: Found, *, every_version: bool
) -> None:
    """Every stored version of every secret written opens to a value that was sent: none is torn."""
    for name, sent in history.sent_values.items():
        info = client.get(f"/v1/secrets/{name}")
        if info.status_code == 404:
            continue  # only unacknowledged versions were sent, and none committed
        latest = int(_ok(info)["latest_version"])
        for version in range(1 if every_version else history.opened.get(name, 0) + 1, latest + 1):
            found.versions += 1
            if _release(client, name, version, reader) not in sent:
                found.problems.append(f"secret {name} v{version} does not open to a value that was sent")
        history.opened[name] = latest


def _consistent(
    client: httpx.Client, size: int, root: bytes, new_size: int, new_root: bytes, problems: list[str]
) -> None:
    if size > new_size:
        problems.append(f"a checkpoint at tree size {size} was seen, but the log now has {new_size} leaves")
        return
    if size == new_size:
        if root != new_root:
            problems.append(f"two different roots were signed at tree size {size}")
        return
    answer = _ok(client.get("/v1/audit/consistency-proof", params={"first": size, "second": new_size}))
    try:
        verify_consistency(
            first=size,
            second=new_size,
            first_root=root,  # the root signed before the kill, not the one the server sends now
            second_root=new_root,
            proof=[bytes.fromhex(node) for node in answer["proof"]],
        )
    except ValueError as exc:
        problems.append(f"no consistency from tree size {size} to {new_size}: {exc}")


def _check_round(client: httpx.Client, history: History, current: Round, found: Found) -> None:
    problems = found.problems
    # Check 3: every acknowledged write, as acknowledged.
    for entry_id, ack in current.audit.items():
        got = client.get(f"/v1/audit/entries/{entry_id}")
        if got.status_code == 200 and got.json()["entry_hash"] == ack["entry_hash"]:
            found.found["audit"] += 1
        else:
            problems.append(f"acknowledged audit entry {entry_id} is missing or changed: {got.status_code}")
    for payment_id, amount in current.payments.items():
        got = client.get(f"/v1/payments/{payment_id}")
        if got.status_code == 200 and Decimal(got.json()["amount"]) == Decimal(amount):
            found.found["payment"] += 1
        else:
            problems.append(f"acknowledged payment {payment_id} is missing or changed: {got.status_code}")
    readers = [s for s, kind in current.sessions.items() if kind == "secret"]
    for name, version, value in current.secrets:
        got = _release(client, name, version, readers[0])
        if got == value:
            found.found["secret"] += 1
        else:
            problems.append(f"acknowledged secret {name} v{version} is missing or changed")
    for acknowledged in (current.begun, current.finished):
        for call_id, entry_id in acknowledged.items():
            if client.get(f"/v1/audit/entries/{entry_id}").status_code == 200:
                found.found["tool"] += 1
            else:
                problems.append(f"acknowledged entry {entry_id} of call {call_id} is missing")
    # Check 4: nothing half there.
    for session_id, kind in current.sessions.items():
        entries = list(_entries(client, session_id))
        if kind == "payment":
            in_ledger = {
                e["details"].get("authorization_id") for e in entries if e["action"] == "payment.authorize"
            }
            rows = {
                p["authorization_id"]
                for p in _pages(client, "/v1/payments", "payments", session_id=session_id)
            }
            if in_ledger != rows:
                problems.append(f"payments and their entries disagree: {sorted(in_ledger ^ rows)}")
        if kind == "tool":
            entries += _finish_open_calls(client, session_id, entries, found)
        if kind == "proxy":
            _check_proxied(current.proxied, entries, found)
        # Check 5: the budget is the sum of the entries.
        charged = sum((Decimal(e.get("charged_usd", "0")) for e in entries), Decimal(0))
        spent = Decimal(_ok(client.get(f"/v1/sessions/{session_id}"))["spent"])
        found.sessions += 1
        if spent != charged:
            problems.append(f"session {session_id} ({kind}) spent {spent}, its entries charged {charged}")


def _check_proxied(answered: int, entries: list[dict[str, Any]], found: Found) -> None:
    """Each answered call was admitted first (its admission, with its charge, commits before the call is
    forwarded); one writer, so at most one more call was in flight at the kill. The outcome is recorded
    after the answer, off the caller's path (`ProxyService.call_tool`): a kill can lose it, and then the
    stale-call sweep records it as unknown, its cost kept. Those are counted, not failed."""
    phases = Counter(str((e.get("details") or {}).get("phase")) for e in entries if e["tool"] == PROXIED)
    if answered <= phases["admit"] <= answered + 1 and phases["finish"] <= phases["admit"]:
        found.found["proxy"] += answered
        found.outcomes_pending += phases["admit"] - phases["finish"]
    else:
        found.problems.append(f"{answered} proxied calls answered, but the ledger holds {dict(phases)}")


def _finish_open_calls(
    client: httpx.Client, session_id: str, entries: list[dict[str, Any]], found: Found
) -> list[dict[str, Any]]:
    """Finish every admitted call of the session whose outcome is not in the ledger; its open call must
    be there (an admission never commits without it). The new outcome entries are returned."""
    phases: dict[str, list[str]] = {}
    for entry in entries:
        details = entry.get("details") or {}
        if "call_id" in details and "phase" in details:
            phases.setdefault(details["call_id"], []).append(details["phase"])
    added = []
    for call_id, seen in phases.items():
        if seen.count("admit") != 1 or seen.count("finish") > 1:
            found.problems.append(f"call {call_id} has phases {seen}")
        if "finish" in seen:
            continue
        finished = client.post(
            f"/v1/tools/calls/{call_id}/finish", json={"status": "error", "error": "killed"}
        )
        if finished.status_code != 200:
            found.problems.append(
                f"admitted call {call_id} cannot be finished: {finished.status_code} {finished.text}"
            )
            continue
        found.reopened_calls += 1
        added.append(_ok(client.get(f"/v1/audit/entries/{finished.json()['entry_id']}"))["record"])
    return added


def _release(client: httpx.Client, name: str, version: int, session_id: str) -> str | None:
    got = client.get(f"/v1/secrets/{name}", params={"version": version}, headers={"X-Session-ID": session_id})
    return str(got.json()["value"]) if got.status_code == 200 else None


def _entries(client: httpx.Client, session_id: str) -> Iterator[dict[str, Any]]:
    return _pages(client, "/v1/audit", "entries", session_id=session_id, order="asc")


def _pages(client: httpx.Client, path: str, items: str, **params: Any) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = _ok(
            client.get(path, params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        )
        yield from page[items]
        cursor = page["next_cursor"]
        if not cursor:
            return


def kill_delay(rng: random.Random, *, low: float = 0.3, high: float = 2.0) -> float:
    return rng.uniform(low, high)
