"""End to end: `haldir approvals pending|show|approve|deny` against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from haldir import ApprovalRequired, HaldirClient
from tests.e2e.server import Server, environment, haldir, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server with a spend_over rule, and the environment of an approver's client commands (a key
    other than the agent's, which asks)."""
    workdir = tmp_path_factory.mktemp("approvals-cli")
    env = environment(workdir)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, workdir) as running:
        admin = running.printed_keys()[0]
        with HaldirClient(api_key=admin, base_url=running.url) as client:
            client.create_approval_rule({"type": "spend_over", "threshold": 100})
            approver = client.request(
                "POST", "/v1/keys", json={"name": "approver", "scopes": ["approvals:write"]}
            )
        yield running, {**env, "HALDIR_URL": running.url, "HALDIR_API_KEY": approver["key"], "ADMIN": admin}


def _held(server: Server, admin: str, amount: int) -> tuple[str, str]:
    """A payment of `amount` held for approval: its session and approval ids."""
    with HaldirClient(api_key=admin, base_url=server.url) as client:
        session = client.create_session("buyer", scopes=["spend"], spend_limit=1000)
        with pytest.raises(ApprovalRequired) as held:
            client.authorize_payment(session["session_id"], amount)
    return str(session["session_id"]), str(held.value.details["approval_id"])


def test_an_approver_lists_shows_and_approves_from_the_terminal(
    server: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    running, env = server
    session_id, approval_id = _held(running, env["ADMIN"], 150)

    listed = haldir("approvals", "pending", env=env)
    listed_json = haldir("approvals", "pending", "--json", env=env)
    shown = haldir("approvals", "show", approval_id, "--json", env=env)
    approved = haldir("approvals", "approve", approval_id, "--note", "ok [bold]for[/] Q4", env=env)
    again = haldir("approvals", "approve", approval_id, env=env)

    assert listed.returncode == 0, listed.stderr
    assert approval_id in listed.stdout
    assert "150.00" in listed.stdout
    assert approval_id in [a["approval_id"] for a in json.loads(listed_json.stdout)]
    assert json.loads(shown.stdout)["status"] == "pending"
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout
    assert "ok [bold]for[/] Q4" in approved.stdout  # user text is shown, not read as markup
    assert again.returncode == 6  # conflict: decided already
    assert "only a pending request can be decided" in again.stderr
    with HaldirClient(api_key=env["ADMIN"], base_url=running.url) as client:
        assert client.authorize_payment(session_id, 150)["status"] == "authorized"


def test_a_denial_from_the_terminal_is_json_and_the_retry_is_denied(
    server: tuple[Server, dict[str, str]],
) -> None:
    running, env = server
    _, approval_id = _held(running, env["ADMIN"], 200)

    denied = haldir("approvals", "deny", approval_id, "--json", "--note", "no", env=env)
    missing = haldir("approvals", "show", "apr_doesnotexist", env=env)
    no_key = haldir("approvals", "pending", env={k: v for k, v in env.items() if k != "HALDIR_API_KEY"})

    assert denied.returncode == 0, denied.stderr
    assert (json.loads(denied.stdout)["status"], json.loads(denied.stdout)["note"]) == ("denied", "no")
    assert missing.returncode == 5
    assert "no approval" in missing.stderr
    assert no_key.returncode == 3
    assert "approvals:read" in no_key.stderr
