"""CrewAI: a real crew (an agent, a task, a scripted fake LLM that calls tools natively) drives governed tools
against a real `haldir serve`. The crew runs in `.venv-clients` (crewai_crew.py; CrewAI cannot share `.venv`
with the server); the ledger is read here. Allowed, denied, held for approval, aborted by CrewAI's failure
policy, a tool that raises or reports a failure, secrets, a model without native tool calling (ReAct), and
`arun` with an async client."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from haldir import HaldirClient
from tests.dist.venvs import CLIENTS_VENV
from tests.e2e.server import environment, haldir, serve

CREW = Path(__file__).with_name("crewai_crew.py")
TOKEN = "wt-7c41d9"
EMAIL = {"to": "ceo@example.com", "body": "hi"}


@dataclass
class Live:
    url: str
    admin: str
    workdir: Path

    def client(self, key: str | None = None) -> HaldirClient:
        return HaldirClient(api_key=key or self.admin, base_url=self.url)

    def session(self, limit: str = "5") -> str:
        with self.client() as client:
            return str(client.create_session("crew", ["execute", "read"], 600, limit)["session_id"])

    def crew(self, session_id: str, *calls: tuple[str, dict[str, Any]], **options: Any) -> dict[str, Any]:
        """crewai_crew.py's report of one run: the model's `calls`, in order, then its final answer."""
        scenario = {"session_id": session_id, "calls": [list(call) for call in calls], **options}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HALDIR_", "PYTHON", "VIRTUAL_ENV"))}
        data = str(self.workdir / "crewai-data")  # CrewAI's own files, out of the user's home
        env.update(
            HALDIR_URL=self.url, HALDIR_API_KEY=self.admin, CREWAI_STORAGE_DIR=data, XDG_DATA_HOME=data
        )
        run = subprocess.run(
            [str(CLIENTS_VENV / "bin/python"), str(CREW), json.dumps(scenario)],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        report: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
        return report

    def entries(self, session_id: str) -> list[dict[str, Any]]:
        """The session's ledger entries, oldest first."""
        with self.client() as client:
            entries = client.list_entries(session_id=session_id, limit=100)["entries"]
        return sorted(entries, key=lambda e: e["leaf_index"])

    def calls(self, session_id: str) -> list[dict[str, Any]]:
        return [e for e in self.entries(session_id) if e["action"] == "tools/call"]

    def spent(self, session_id: str) -> Decimal:
        with self.client() as client:
            return Decimal(client.get_session(session_id)["spent"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server that denies `delete_*`, holds `send_*` for approval and keeps the secret weather_token."""
    if not (CLIENTS_VENV / ".installed").exists():
        pytest.fail(f"{CLIENTS_VENV} is missing: run `make .venv-clients/.installed`")
    workdir = tmp_path_factory.mktemp("crewai")
    env = environment(workdir)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, workdir) as server:
        admin = server.printed_keys()[0]
        with HaldirClient(api_key=admin, base_url=server.url) as client:
            client.create_policy({"type": "deny", "tools": ["delete_*"]})
            client.create_approval_rule({"type": "tool", "tool": "send_*"})
            client.store_secret("weather_token", TOKEN, "read")
        yield Live(url=server.url, admin=admin, workdir=workdir)


@pytest.fixture(scope="module")
def oslo(live: Live) -> tuple[str, dict[str, Any]]:
    """One crew run: the model asks for the forecast (0.05 USD a call), then to delete /etc."""
    session_id = live.session()
    report = live.crew(
        session_id, ("forecast", {"city": "Oslo"}), ("delete_file", {"path": "/etc"}), cost_usd="0.05"
    )
    return session_id, report


def test_importing_the_integration_without_crewai_names_the_extra_to_install() -> None:
    if importlib.util.find_spec("crewai") is not None:
        pytest.skip("crewai is installed here")
    with pytest.raises(ImportError, match=r"pip install 'haldir-client\[crewai\]'"):
        importlib.import_module("haldir.integrations.crewai")


@pytest.mark.e2e
def test_the_model_is_offered_the_governed_tools_by_their_own_names_and_schemas(
    oslo: tuple[str, dict[str, Any]],
) -> None:
    _, report = oslo
    offered = {t["function"]["name"]: t["function"] for t in report["offered"]}
    assert offered["forecast"]["description"] == "The weather forecast for a city."
    assert set(offered["forecast"]["parameters"]["properties"]) == {"city", "token"}
    assert offered["forecast"]["parameters"]["required"] == ["city", "token"]  # OpenAI strict schemas
    assert set(offered["delete_file"]["parameters"]["properties"]) == {"path"}


@pytest.mark.e2e
def test_an_allowed_call_runs_and_is_recorded_with_its_cost(
    live: Live, oslo: tuple[str, dict[str, Any]]
) -> None:
    session_id, report = oslo
    assert report["tool_messages"][0] == {
        "name": "forecast",
        "content": "Sunny in Oslo (asked with no token)",
    }
    assert report["answer"] == "All done."
    assert report["ran"] == [{"tool": "forecast", "city": "Oslo", "token": ""}]
    forecast = [e for e in live.calls(session_id) if e["tool"] == "forecast"]
    assert [(e["details"]["phase"], e["status"], Decimal(e["charged_usd"])) for e in forecast] == [
        ("admit", "ok", Decimal("0.05")),
        ("finish", "ok", Decimal("0")),
    ]
    assert all(e["details"]["local"] is True for e in forecast)
    assert live.spent(session_id) == Decimal("0.05")


@pytest.mark.e2e
def test_a_denied_call_is_a_tool_failure_the_model_reads_and_a_denied_entry(
    live: Live, oslo: tuple[str, dict[str, Any]]
) -> None:
    session_id, report = oslo
    refused = "Haldir refused this call (tool_denied): Tool 'delete_file' is on the deny list"
    assert report["tool_messages"][1] == {"name": "delete_file", "content": f"{refused} (code: tool_denied)"}
    (failure,) = report["failures"]
    assert (failure["tool"], failure["code"], failure["message"]) == ("delete_file", "tool_denied", refused)
    assert failure["details"]["policy_id"].startswith("pol_")
    assert all(ran["tool"] != "delete_file" for ran in report["ran"])
    denied = [e for e in live.calls(session_id) if e["tool"] == "delete_file"]
    assert [(e["status"], e["flagged"], Decimal(e["charged_usd"])) for e in denied] == [
        ("denied", True, Decimal("0"))
    ]


@pytest.mark.e2e
def test_a_held_call_shows_the_approval_id_and_runs_once_a_person_approves(live: Live) -> None:
    session_id = live.session()

    held = live.crew(session_id, ("send_email", EMAIL))

    content = held["tool_messages"][0]["content"]
    approval_id = held["failures"][0]["details"]["approval_id"]
    assert content.startswith("Haldir refused this call (approval_required)")
    assert f"Approval {approval_id} is pending; retry once a person approves it." in content
    assert (held["failures"][0]["code"], held["failures"][0]["retryable"]) == ("approval_required", True)
    assert held["ran"] == []
    with live.client() as admin:
        approver = admin.request("POST", "/v1/keys", json={"name": "approver", "scopes": ["approvals:write"]})
    with live.client(approver["key"]) as client:  # never the key that asked
        client.request("POST", f"/v1/approvals/{approval_id}/approve")
    again = live.crew(session_id, ("send_email", EMAIL))

    assert again["tool_messages"][0]["content"] == "sent to ceo@example.com"
    assert again["failures"] == []
    assert again["ran"] == [{"tool": "send_email", "to": "ceo@example.com"}]
    trail = [(e["action"], e["status"], e["details"].get("approval_id")) for e in live.entries(session_id)]
    assert trail[0] == ("approval.request", "ok", approval_id)
    assert [entry for entry in trail if entry[0] == "tools/call"] == [("tools/call", "ok", None)] * 2


@pytest.mark.e2e
def test_a_react_model_s_calls_are_governed_under_the_tools_sanitized_names(live: Live) -> None:
    session_id = live.session()

    report = live.crew(
        session_id, ("forecast", {"city": "Oslo"}), ("Delete File", {"path": "/etc"}), react=True
    )

    assert report["answer"] == "All done."
    assert report["ran"] == [{"tool": "forecast", "city": "Oslo", "token": ""}]
    assert [(f["tool"], f["code"]) for f in report["failures"]] == [("delete_file", "tool_denied")]
    assert [(e["tool"], e["status"]) for e in live.calls(session_id)] == [
        ("forecast", "ok"),
        ("forecast", "ok"),
        ("delete_file", "denied"),
    ]


@pytest.mark.e2e
def test_crewais_raise_policy_aborts_the_crew_with_haldirs_code(live: Live) -> None:
    session_id = live.session()

    report = live.crew(session_id, ("delete_file", {"path": "/tmp/x"}), failure_policy="raise")

    assert report["answer"] is None
    assert report["raised"]["type"] == "ToolExecutionFailedError"
    assert report["raised"]["code"] == "tool_denied"
    assert report["ran"] == []
    assert [e["status"] for e in live.calls(session_id)] == ["denied"]


@pytest.mark.e2e
def test_the_model_never_sees_an_injected_secret(live: Live) -> None:
    session_id = live.session()
    reference = "{{secret:weather_token}}"

    report = live.crew(
        session_id, ("forecast", {"city": "Oslo", "token": reference}), ("vault_lookup", {"token": reference})
    )

    assert report["ran"][0] == {"tool": "forecast", "city": "Oslo", "token": TOKEN}
    assert [m["content"] for m in report["tool_messages"]] == [
        "Sunny in Oslo (asked with [secret:weather_token])",
        "token [secret:weather_token] expired (code: expired)",
    ]
    assert report["failures"][0]["code"] == "expired"
    assert TOKEN not in json.dumps({k: v for k, v in report.items() if k != "ran"})
    calls = live.calls(session_id)
    assert TOKEN not in json.dumps(calls, default=str)
    finish = calls[-1]  # a ToolFailure the tool returned is the call's error
    assert (finish["status"], finish["details"]["error"]) == (
        "error",
        "ToolFailureReturned: token [secret:weather_token] expired (code: expired)",
    )


@pytest.mark.e2e
def test_a_tool_that_raises_is_recorded_as_an_error_and_its_cost_released(live: Live) -> None:
    session_id = live.session()

    report = live.crew(session_id, ("flaky", {"city": "Oslo"}), cost_usd="0.30")

    assert report["tool_messages"][0]["content"] == "Error executing tool: no data for Oslo"
    assert report["failures"][0]["code"] == "RuntimeError"  # CrewAI's record of an exception
    finish = live.calls(session_id)[-1]
    assert (finish["status"], finish["details"]["error"]) == ("error", "RuntimeError: no data for Oslo")
    assert live.spent(session_id) == Decimal("0")


@pytest.mark.e2e
def test_arun_with_an_async_client_governs_each_call(live: Live) -> None:
    session_id = live.session()

    report = live.crew(
        session_id,
        ("alookup", {"city": "Bergen", "token": "{{secret:weather_token}}"}),
        ("delete_file", {"path": "/etc"}),
        mode="arun",
        cost_usd="0.02",
    )

    answer, refused = report["results"]
    assert answer == "Rainy in Bergen (asked with [secret:weather_token])"
    assert (refused["code"], refused["retryable"]) == ("tool_denied", False)
    assert report["ran"] == [{"tool": "alookup", "city": "Bergen", "token": TOKEN}]
    assert [(e["tool"], e["status"]) for e in live.calls(session_id)] == [
        ("alookup", "ok"),
        ("alookup", "ok"),
        ("delete_file", "denied"),
    ]
    assert live.spent(session_id) == Decimal("0.02")
