"""Every Python and curl example of the product description (README, proxy guide, governance blog), run as
printed against a live `haldir serve`.

The examples are copied byte for byte into seed_examples/. A test changes only the API key (`hld_xxx`), the
server URL (`https://haldir.xyz`, `http://localhost:8000`), upstream MCP server URLs and the ids of earlier
steps (`ses_xxx`, `ses_a1b2c3d4`), by plain string replacement. Where an example cannot run as printed, the
test runs the nearest working form and a comment says why. Each walkthrough acts in a tenant of its own, so
upstream names, policies and ledgers never meet.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.e2e.server import HALDIR, Server, environment, free_port, haldir, serve
from tests.mcp_servers import ROOT, stop
from tests.support import call_outcomes, outcomes_pending

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).with_name("seed_examples")
SECURITY_TOOLS = ROOT / "tests/servers/security_tools.py"
TIMEOUT_S = 60
OUTCOME_TIMEOUT_S = 10  # how long the server may take to record the outcome of a call it answered
# A tenant per document, and one more for each proxy guide part that would meet another's upstreams or
# policies; their keys are made with `haldir keys create`, all at once. The README's tests each act on
# agents, secrets and upstreams of their own, so they share a tenant and pass in any order.
TENANTS = ("readme", "guide", "guide-window", "guide-python", "blog")
SECURITY = ["scan_domain", "dns_lookup", "whois_lookup", "get_headers", "delete_database", "drop_table"]

# Runs an example file as `__main__`, unchanged, then writes the names it bound that the test asks for
# (argv[3:]) to the JSON file argv[2], so a test can check what the example's own variables hold.
DRIVER = """
import json, runpy, sys
names = runpy.run_path(sys.argv[1], run_name="__main__")
with open(sys.argv[2], "w") as out:
    json.dump({name: names[name] for name in sys.argv[3:]}, out, default=str)
"""


@dataclass
class Live:
    server: Server
    env: dict[str, str]
    data_dir: Path
    keys: dict[str, str]
    tools_url: str
    encryption_key: str

    @property
    def url(self) -> str:
        return self.server.url

    def rest(self, tenant: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S)

    def fill(self, text: str, tenant: str, **replacements: str) -> str:
        """An example with this server's URL, the tenant's key, and `replacements` (old=new) put in."""
        text = text.replace("hld_xxx", self.keys[tenant])
        for url in ("https://haldir.xyz", "http://localhost:8000"):
            text = text.replace(url, self.url)
        for old, new in replacements.items():
            assert old in text, f"{old!r} is not in the example"
            text = text.replace(old, new)
        return text


@dataclass
class Answer:
    status: int
    body: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server for the module, started with the master key the README's key line prints, a key per
    tenant, and the security-tools MCP server its upstreams point at."""
    workdir = tmp_path_factory.mktemp("seeds")
    printed = _bash(_line(example("readme_self_host.sh"), "python3 -c"), cwd=workdir)
    assert printed.returncode == 0, printed.stderr
    encryption_key = printed.stdout.strip()
    env = environment(workdir) | {
        "HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8",
        "HALDIR_ENCRYPTION_KEY": encryption_key,
    }
    migrated = haldir("migrate", "up", env=env)
    assert migrated.returncode == 0, migrated.stderr
    # The keys, the tools server and the Haldir server start side by side: each pays a Python start-up.
    creating = {
        tenant: subprocess.Popen(
            [HALDIR, "keys", "create", "--tenant", tenant, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tenant in TENANTS
    }
    try:
        with security_tools() as tools, serve(env, workdir) as server:
            keys = {tenant: _created_key(process) for tenant, process in creating.items()}
            tools.wait_listening()
            yield Live(server, env, workdir, keys, tools.url, encryption_key)
    finally:
        for process in creating.values():
            if process.poll() is None:  # only when the server failed to start
                process.kill()
                process.communicate(timeout=TIMEOUT_S)


def _created_key(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err
    return str(json.loads(out)["key"])


@dataclass
class ToolsServer:
    """tests/servers/security_tools.py: its groups of tools are at `<url>/<group>/mcp`."""

    url: str
    process: subprocess.Popen[bytes]

    def wait_listening(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert self.process.poll() is None, f"security_tools.py exited with {self.process.returncode}"
            try:
                httpx.get(self.url, timeout=1)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"security_tools.py is not listening at {self.url}"
                time.sleep(0.05)  # polling a real process for readiness, not making time pass


@contextmanager
def security_tools() -> Iterator[ToolsServer]:
    """The tools server started on a free port, not yet waited for; always stopped."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SECURITY_TOOLS), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield ToolsServer(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def _line(text: str, start: str) -> str:
    [found] = [line for line in text.splitlines() if line.startswith(start)]
    return found


def commands(text: str) -> list[str]:
    """The commands of a snippet that prints several, separated by blank lines."""
    return [chunk.strip() for chunk in text.split("\n\n") if chunk.strip()]


def _bash(command: str, *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = env or {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def curl(command: str, cwd: Path) -> Answer:
    """Run one printed curl command; the harness (not the example) adds `-sS -w` to read the status."""
    command = command.rstrip("\n")
    assert "#" not in command.splitlines()[-1], "a trailing comment would swallow the added options"
    result = _bash(command + " -sS -w '\\n%{http_code}'", cwd=cwd)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return Answer(int(status), json.loads(body) if body else None)


def recorded(rest: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """The ledger entries GET /v1/audit lists for `params`, oldest first, once every call admitted among
    them has its outcome recorded: the server records it after the call's answer, so this polls it."""
    deadline = time.monotonic() + OUTCOME_TIMEOUT_S
    while True:
        response = rest.get("/v1/audit", params={"limit": "200", **params})
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = list(reversed(response.json()["entries"]))
        pending = outcomes_pending(entries)
        if not pending:
            return entries
        assert time.monotonic() < deadline, f"no outcome recorded for {sorted(pending)}"
        time.sleep(0.02)  # polling the server process, not making time pass


def python(code: str, live: Live, tmp_path: Path, *names: str) -> tuple[str, dict[str, Any]]:
    """Run a Python example with the venv's Python (HALDIR_URL set, no other HALDIR_* variable); its
    stdout, and the values of `names` it bound."""
    script = tmp_path / "example.py"
    script.write_text(code)
    dumped = tmp_path / "names.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALDIR_")} | {"HALDIR_URL": live.url}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(script), str(dumped), *names],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(dumped.read_text())


def test_the_readme_quick_start_runs_with_the_sdk_imported_from_haldir(live: Live, tmp_path: Path) -> None:
    printed = example("readme_quickstart.py")
    # As printed, `from sdk.client import HaldirClient` cannot work: Haldir ships no top-level package named
    # `sdk`, which would collide with any other `sdk` module in a user's environment. The nearest working
    # form imports the same client from `haldir`; the rest of the example runs as printed.
    as_printed = subprocess.run(
        [sys.executable, "-c", printed.splitlines()[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert "No module named 'sdk'" in as_printed.stderr
    code = live.fill(printed, "readme").replace(
        "from sdk.client import HaldirClient\n", "from haldir import HaldirClient\n"
    )

    _, names = python(code, live, tmp_path, "session", "key")

    session = names["session"]
    assert (session["agent_id"], session["scopes"], session["spend_limit"]) == (
        "my-agent",
        ["read", "spend"],
        "50.00",
    )
    assert names["key"]["value"] == "sk_live_xxx"
    with live.rest("readme") as rest:
        after = rest.get(f"/v1/sessions/{session['session_id']}").json()
        trail = rest.get("/v1/audit", params={"session_id": session["session_id"]}).json()["entries"]
        spend = rest.get("/v1/audit/spend", params={"session_id": session["session_id"]}).json()
    assert after["is_valid"] is False
    assert after["revoked_at"] is not None
    assert after["spent"] == "29.99", "the authorized 29.99 and the logged 29.99 are one charge"
    assert spend["total_usd"] == "29.99"
    assert {("stripe", "charge", "29.99"), ("vault", "secret.release", "0.00")} <= {
        (entry["tool"], entry["action"], entry["cost_usd"]) for entry in trail
    }
    assert "sk_live_xxx" not in json.dumps(trail)


def test_the_readme_gate_vault_and_watch_curls_run_as_printed(live: Live, tmp_path: Path) -> None:
    gate = curl(live.fill(example("readme_gate.sh"), "readme"), tmp_path)
    assert gate.status == 201, gate.body
    session = gate.body
    assert (session["agent_id"], session["scopes"]) == ("my-bot", ["browse", "read", "spend"])
    assert (session["spend_limit"], session["ttl"]) == ("50.00", 3600)
    assert datetime.fromisoformat(session["expires_at"]) > datetime.fromisoformat(session["created_at"])

    vault = curl(live.fill(example("readme_vault.sh"), "readme"), tmp_path)
    assert vault.status == 201, vault.body
    assert vault.body["name"] == "api_key"
    assert "sk_live_xxx" not in json.dumps(vault.body)
    with live.rest("readme") as rest:
        released = rest.get("/v1/secrets/api_key", headers={"X-Session-ID": session["session_id"]})
    assert released.status_code == 200, released.text
    assert released.json()["value"] == "sk_live_xxx"

    watch = curl(live.fill(example("readme_watch.sh"), "readme"), tmp_path)
    assert watch.status == 200, watch.body
    entries = watch.body["entries"]
    assert {entry["agent_id"] for entry in entries} == {"my-bot"}
    assert [(e["tool"], e["action"]) for e in entries if e["session_id"] == session["session_id"]] == [
        ("vault", "secret.release")
    ]


def test_the_readme_proxy_curls_register_an_upstream_and_call_through_it(live: Live, tmp_path: Path) -> None:
    register, call = commands(example("readme_proxy.sh"))
    upstream = f"{live.tools_url}/security/mcp"
    registered = curl(live.fill(register, "readme", **{"https://my-mcp-server.com/mcp": upstream}), tmp_path)
    assert registered.status == 201, registered.body
    assert registered.body["name"] == "myserver"
    assert sorted(registered.body["tools"]["added"]) == sorted(SECURITY)

    # `ses_xxx` is a session of this tenant. The README's only session example (Gate: read, browse,
    # spend:50) does not hold `execute`, the scope a proxied tool call needs, so under it the call is
    # refused; the nearest working form is the same Gate example with `execute` among its scopes.
    gate = example("readme_gate.sh")
    browsing = curl(live.fill(gate, "readme"), tmp_path).body["session_id"]
    refused = curl(live.fill(call, "readme", ses_xxx=browsing), tmp_path)
    assert refused.status == 403, refused.body
    assert refused.body["code"] == "not_allowed"
    assert "execute" in refused.body["error"]
    executing = curl(live.fill(gate, "readme", **{'"browse"': '"browse", "execute"'}), tmp_path)
    assert executing.status == 201, executing.body

    called = curl(live.fill(call, "readme", ses_xxx=executing.body["session_id"]), tmp_path)

    assert called.status == 200, called.body
    assert called.body["content"] == [{"type": "text", "text": "scanned example.com: 0 findings"}]
    assert not called.body.get("isError")
    with live.rest("readme") as rest:
        trail = recorded(rest, tool="scan_domain")
    assert call_outcomes(trail) == [("scan_domain", "denied"), ("scan_domain", "ok")]
    assert [(entry["session_id"], entry["status"], entry["flagged"]) for entry in trail] == [
        (browsing, "denied", True),
        (executing.body["session_id"], "ok", False),
        (executing.body["session_id"], "ok", False),
    ]
    assert [entry["details"].get("phase") for entry in trail] == [None, "admit", "finish"]


def test_the_readme_approval_rule_curl_runs_as_printed(live: Live, tmp_path: Path) -> None:
    rule = curl(live.fill(example("readme_approvals.sh"), "readme"), tmp_path)
    assert rule.status == 201, rule.body
    assert (rule.body["type"], Decimal(rule.body["threshold"])) == ("spend_over", 100)
    with live.rest("readme") as rest:
        session = rest.post("/v1/sessions", json={"agent_id": "buyer", "scopes": ["spend:500"]}).json()
        small = rest.post(
            "/v1/payments/authorize", json={"session_id": session["session_id"], "amount": "99"}
        )
        large = rest.post(
            "/v1/payments/authorize", json={"session_id": session["session_id"], "amount": "150"}
        )
    assert small.status_code == 201, small.text
    assert large.status_code == 202, large.text
    assert large.json()["code"] == "approval_required"
    assert large.json()["approval_id"].startswith("apr_")


def test_the_readme_health_curl_answers_on_the_health_alias(live: Live, tmp_path: Path) -> None:
    # Of the self-host snippet only the key line (see the next test) and this curl run here: `git clone`,
    # `cp .env.example .env` and `docker compose up -d` need the repository's remote and a Docker engine.
    # The nearest working form is `make run` (`haldir migrate up` then `haldir serve`), which is how the
    # module's server was started.
    health = curl(live.fill(_line(example("readme_self_host.sh"), "curl"), "readme"), tmp_path)
    assert health.status == 200, health.body
    assert health.body["status"] == "ok"
    assert health.body["schema_revision"] == health.body["schema_head"]
    assert "/health" in httpx.get(f"{live.url}/openapi.json", timeout=TIMEOUT_S).json()["paths"]


def test_the_readme_key_line_prints_a_master_key_the_server_accepts(live: Live) -> None:
    assert len(base64.urlsafe_b64decode(live.encryption_key)) == 32
    assert live.env["HALDIR_ENCRYPTION_KEY"] == live.encryption_key
    assert not (live.data_dir / "vault-master.key").exists(), "the server generated a key of its own"
    with live.rest("readme") as rest:
        stored = rest.post("/v1/secrets", json={"name": "token", "value": "s3cr3t"})
        session = rest.post("/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}).json()
        released = rest.get("/v1/secrets/token", headers={"X-Session-ID": session["session_id"]})
    assert stored.status_code == 201, stored.text
    assert released.json()["value"] == "s3cr3t"


def test_the_readme_cli_lines_that_exist_today_run_as_printed(live: Live, tmp_path: Path) -> None:
    # `login`, `overview`, `status`, `ready`, `audit tail` land with issue 13.
    printed = example("readme_cli.sh")
    with live.rest("readme") as rest:
        session = rest.post("/v1/sessions", json={"agent_id": "cli-bot", "scopes": ["spend:10"]}).json()
        for cost in ("1.50", "2"):
            logged = rest.post(
                "/v1/audit",
                json={"session_id": session["session_id"], "tool": "t", "action": "a", "cost_usd": cost},
            )
            assert logged.status_code == 201, logged.text
        size = rest.get("/v1/audit/tree-head").json()["tree_size"]
    env = live.env | {
        "PATH": f"{Path(HALDIR).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HALDIR_URL": live.url,
        "HALDIR_API_KEY": live.keys["readme"],
    }

    starts = ("haldir migrate up", "haldir audit export", "haldir audit verify", "haldir webhooks deliveries")
    lines = [_line(printed, start) for start in starts]
    with ThreadPoolExecutor() as pool:  # independent commands; each pays a Python start-up
        migrated, exported, verified, deliveries = pool.map(
            lambda line: _bash(line, cwd=tmp_path, env=env), lines
        )

    assert migrated.returncode == 0, migrated.stderr
    assert "(latest)" in migrated.stdout + migrated.stderr
    assert exported.returncode == 0, exported.stderr
    lines = (tmp_path / "audit-2026-04.jsonl").read_text().splitlines()
    assert len(lines) == size + 1, "an entry per leaf, then the checkpoint"
    assert [json.loads(line)["record"]["cost_usd"] for line in lines[-3:-1]] == ["1.50", "2.00"]
    assert "checkpoint" in json.loads(lines[-1])
    assert verified.returncode == 0, verified.stderr
    assert f"ok: {size} entries, verified by the server" in verified.stdout
    assert deliveries.returncode == 0, deliveries.stderr
    assert "attempted" in deliveries.stdout  # the table's header: no webhook, no attempt yet


def test_the_proxy_guide_curl_walkthrough_runs_as_printed(live: Live, tmp_path: Path) -> None:
    upstream = {"https://my-mcp-server.com/mcp": f"{live.tools_url}/security/mcp"}
    step1 = curl(live.fill(example("proxy_guide_step1.sh"), "guide", **upstream), tmp_path)
    assert step1.status == 201, step1.body
    assert sorted(step1.body["tools"]["added"]) == sorted(SECURITY)
    tools = curl(live.fill(example("proxy_guide_tools.sh"), "guide"), tmp_path)
    assert tools.status == 200, tools.body
    assert {(tool["name"], tool["upstream"]) for tool in tools.body["tools"]} == {
        (name, "security-tools") for name in SECURITY
    }

    step2 = curl(live.fill(example("proxy_guide_step2.sh"), "guide"), tmp_path)
    assert step2.status == 201, step2.body
    documented = json.loads(example("proxy_guide_step2_response.json"))
    session = step2.body
    assert set(documented) <= set(session)
    assert (session["agent_id"], session["ttl"]) == (documented["agent_id"], documented["ttl"])
    assert session["scopes"] == sorted(documented["scopes"])
    assert Decimal(session["spend_limit"]) == Decimal("25.00")
    assert session["session_id"].startswith("ses_")

    for name, spec in [
        (
            "proxy_guide_deny.sh",
            {"type": "deny", "tools": ["delete_database", "drop_table", "send_wire_transfer"]},
        ),
        ("proxy_guide_spend_limit.sh", {"type": "spend_limit", "max_usd": "50.00", "per": "session"}),
        ("proxy_guide_rate_limit.sh", {"type": "rate_limit", "max_calls": 100, "window_seconds": 3600}),
        (
            "proxy_guide_allow.sh",
            {"type": "allow", "tools": ["scan_domain", "dns_lookup", "whois_lookup", "get_headers"]},
        ),
    ]:
        policy = curl(live.fill(example(name), "guide"), tmp_path)
        assert policy.status == 201, (name, policy.body)
        assert {key: policy.body[key] for key in spec} == spec
        assert policy.body["policy_id"].startswith("pol_")

    sid = session["session_id"]
    step4 = curl(live.fill(example("proxy_guide_step4.sh"), "guide", ses_a1b2c3d4=sid), tmp_path)

    assert step4.status == 200, step4.body
    assert step4.body["content"] == [{"type": "text", "text": "scanned example.com: 0 findings"}]
    with live.rest("guide") as rest:
        denied = rest.post(
            "/v1/proxy/call",
            json={"tool": "delete_database", "arguments": {"name": "prod"}, "session_id": sid},
        )
        assert denied.status_code == 403, denied.text
        assert denied.json()["code"] == "tool_denied"
        assert denied.json()["error"] == "Tool 'delete_database' is on the deny list"
        trail = recorded(rest, session_id=sid)
        # "You can revoke it earlier with DELETE /v1/sessions/ses_a1b2c3d4."
        assert rest.delete(f"/v1/sessions/{sid}").status_code == 200
        assert rest.get(f"/v1/sessions/{sid}").json()["is_valid"] is False
    after_revoke = curl(live.fill(example("proxy_guide_step4.sh"), "guide", ses_a1b2c3d4=sid), tmp_path)
    assert after_revoke.status == 403, after_revoke.body

    entry = json.loads(example("proxy_guide_step5_entry.json"))
    flagged = [e for e in trail if e["flagged"]]
    assert len(flagged) == 1
    assert set(entry) <= set(flagged[0])
    assert {
        key: flagged[0][key] for key in ("agent_id", "tool", "status", "flagged", "flag_reason", "cost_usd")
    } == {
        "agent_id": "research-bot",
        "tool": "delete_database",
        "status": "denied",
        "flagged": True,
        "flag_reason": entry["flag_reason"],
        "cost_usd": "0.00",
    }
    assert [(e["tool"], e["status"], e["details"]["phase"]) for e in trail if not e["flagged"]] == [
        ("scan_domain", "ok", "admit"),
        ("scan_domain", "ok", "finish"),
    ]
    assert call_outcomes(trail) == [("scan_domain", "ok"), ("delete_database", "denied")]


def test_the_proxy_guide_time_window_policy_runs_as_printed(live: Live, tmp_path: Path) -> None:
    # In a tenant of its own: the window makes later calls depend on the wall clock, so the test decides
    # what a call must get from the clock read around it.
    upstream = {"https://my-mcp-server.com/mcp": f"{live.tools_url}/security/mcp"}
    assert (
        curl(live.fill(example("proxy_guide_step1.sh"), "guide-window", **upstream), tmp_path).status == 201
    )
    sid = curl(live.fill(example("proxy_guide_step2.sh"), "guide-window"), tmp_path).body["session_id"]

    policy = curl(live.fill(example("proxy_guide_time_window.sh"), "guide-window"), tmp_path)

    assert policy.status == 201, policy.body
    assert policy.body["allowed_hours"] == {"start": "09:00", "end": "17:00"}
    assert policy.body["timezone"] == "America/New_York"
    before = _in_business_hours()
    call = curl(live.fill(example("proxy_guide_step4.sh"), "guide-window", ses_a1b2c3d4=sid), tmp_path)
    after = _in_business_hours()
    # Across 09:00 or 17:00 (the clock moved during the call) either answer is right; otherwise only one.
    expected = {200 if inside else 403 for inside in (before, after)}
    assert call.status in expected, call.body
    if call.status == 403:
        assert call.body["code"] == "outside_time_window"
        assert "09:00" in call.body["error"]
    else:
        assert call.body["content"] == [{"type": "text", "text": "scanned example.com: 0 findings"}]


def _in_business_hours() -> bool:
    now = datetime.now(ZoneInfo("America/New_York"))
    return 9 <= now.hour < 17


def test_the_proxy_guide_python_walkthrough_runs_as_printed(live: Live, tmp_path: Path) -> None:
    upstreams = {
        f"https://{group}-mcp.internal/mcp": f"{live.tools_url}/{group}/mcp"
        for group in ("security", "data", "comms")
    }
    registered, _ = python(
        live.fill(example("proxy_guide_register.py"), "guide-python", **upstreams), live, tmp_path
    )
    assert registered.splitlines() == [
        "Registered upstream: security-tools",
        "Registered upstream: data-tools",
        "Registered upstream: comms-tools",
    ]
    with live.rest("guide-python") as rest:
        tools = {tool["name"]: tool["upstream"] for tool in rest.get("/v1/proxy/tools").json()["tools"]}
    assert tools["scan_domain"] == "security-tools"
    assert tools["query_rows"] == "data-tools"
    assert tools["send_wire_transfer"] == "comms-tools"

    # Step 5 continues step 4's script (it uses its `h` and `session`), so they run as one program.
    code = live.fill(example("proxy_guide_step4.py") + "\n" + example("proxy_guide_step5.py"), "guide-python")
    printed, names = python(code, live, tmp_path, "session", "result")

    session = names["session"]
    assert (session["agent_id"], session["scopes"], session["spend_limit"]) == (
        "scanner-bot",
        ["execute", "read"],
        "10.00",
    )
    assert session["ttl"] == 1800
    assert names["result"]["content"] == [{"type": "text", "text": "scanned example.com: 0 findings"}]
    lines = printed.splitlines()
    assert "scanned example.com: 0 findings" in lines[0]
    trail = [line for line in lines[1:] if line]
    assert trail[-1] == "Total spend: $0.00"
    for line in trail[:-1]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\S+ \| scan_domain \| OK \| \$0\.00", line), line
    # The example reads the trail right after the call's answer: it holds the call's admit entry, and its
    # finish entry when the server had recorded the outcome (which it does after the answer) by then.
    with live.rest("guide-python") as rest:
        ledger = recorded(rest, session_id=session["session_id"])
    assert call_outcomes(ledger) == [("scan_domain", "ok")]
    assert [(e["details"]["phase"], e["cost_usd"]) for e in ledger] == [("admit", "0.00"), ("finish", "0.00")]
    assert trail[:-1] in [
        [f"{e['timestamp']} | scan_domain | OK | $0.00" for e in reversed(ledger[:read])] for read in (1, 2)
    ]


def test_the_blog_walkthrough_runs_as_printed(live: Live, tmp_path: Path) -> None:
    _, names = python(live.fill(example("blog_governance.py"), "blog"), live, tmp_path, "session", "key")
    session = names["session"]
    assert (session["agent_id"], session["scopes"], session["ttl"]) == (
        "order-processing-bot",
        ["read", "spend"],
        3600,
    )
    assert session["spend_limit"] == "50.00"
    assert names["key"]["value"] == "sk_live_xxx"
    with live.rest("blog") as rest:
        after = rest.get(f"/v1/sessions/{session['session_id']}").json()
        spend = rest.get("/v1/audit/spend", params={"session_id": session["session_id"]}).json()
    assert after["is_valid"] is False
    assert after["spent"] == "29.99", "the authorized 29.99 and the logged 29.99 are one charge"
    assert spend["total_usd"] == "29.99"

    gate = curl(live.fill(example("blog_gate.sh"), "blog"), tmp_path)
    assert gate.status == 201, gate.body
    assert (gate.body["agent_id"], gate.body["scopes"], gate.body["ttl"]) == ("data-analyst", ["read"], 1800)
    assert gate.body["spend_limit"] == "0.00"

    watch = curl(live.fill(example("blog_watch.sh"), "blog"), tmp_path)
    assert watch.status == 200, watch.body
    entries = watch.body["entries"]
    assert {entry["agent_id"] for entry in entries} == {"order-processing-bot"}
    assert {("stripe", "charge", "29.99"), ("vault", "secret.release", "0.00")} <= {
        (entry["tool"], entry["action"], entry["cost_usd"]) for entry in entries
    }


def test_the_readme_example_of_this_repository_runs_as_printed(live: Live, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"^## Example\n.*?^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert code, "README.md's Example section has no Python block"
    filled = code.group(1).replace("hld_…", live.keys["readme"]).replace("sk_live_…", "sk_live_example")
    printed, names = python(filled, live, tmp_path, "session", "key")
    assert printed.strip() == "29.99"
    assert names["key"]["value"] == "sk_live_example"
    with live.rest("readme") as rest:
        after = rest.get(f"/v1/sessions/{names['session']['session_id']}").json()
    assert (after["spent"], after["is_valid"]) == ("29.99", False)


def test_the_readme_compliance_command_runs_as_printed(live: Live, tmp_path: Path) -> None:
    printed = example("readme_compliance.sh").strip()
    with live.rest("readme") as rest:
        vkey = rest.get("/v1/audit/log-key").json()["vkey"]
    env = live.env | {
        "PATH": f"{Path(HALDIR).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HALDIR_URL": live.url,
        "HALDIR_API_KEY": live.keys["readme"],
    }
    written = _bash(printed, cwd=tmp_path, env=env)
    assert written.returncode == 0, written.stderr
    pack = tmp_path / "evidence-q1-2026.md"
    assert "| 4 | Audit trail | CC7.2 |" in pack.read_text()
    verified = _bash(f"haldir compliance verify {pack.name} --key '{vkey}'", cwd=tmp_path, env=env)
    assert verified.returncode == 0, verified.stderr
    assert "from 2026-01-01T00:00:00Z" in verified.stdout
