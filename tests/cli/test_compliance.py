"""`haldir compliance evidence|verify` through Typer's CliRunner, against the app in-process: the seed's
command as printed, offline verification with the log key alone, and one line naming any edit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from haldir.cli import compliance
from haldir.cli.app import app
from haldir.client import HaldirClient
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

pytestmark = pytest.mark.anyio
runner = CliRunner()


@pytest.fixture
def served(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """Client commands reach the in-process app with the admin key."""

    @contextmanager
    def connect(*, needs: str) -> Iterator[HaldirClient]:
        with HaldirClient(
            api_key=api.admin_key, base_url="http://haldir.test", transport=AppTransport(api.app)
        ) as client:
            yield client

    monkeypatch.setattr(compliance, "connect", connect)
    return api


async def _run(*args: str) -> Result:
    return await blocking(lambda: runner.invoke(app, list(args)))


def _last_json(result: Result) -> dict[str, Any]:
    """The command's JSON line: the in-process app logs its requests to the same stdout."""
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


async def _vkey(api: Api) -> str:
    found = await api.client.get("/v1/audit/log-key", headers=api.auth(api.admin_key))
    return str(found.json()["vkey"])


async def _activity(api: Api) -> None:
    session = await api.client.post(
        "/v1/sessions",
        json={"agent_id": "a", "scopes": ["spend"], "spend_limit": "10"},
        headers=api.auth(api.admin_key),
    )
    await api.client.post(
        "/v1/payments/authorize",
        json={"session_id": session.json()["session_id"], "amount": "1.25"},
        headers=api.auth(api.admin_key),
    )
    api.clock.advance(60)


async def test_the_seed_command_writes_markdown_that_verifies_offline(served: Api, tmp_path: Path) -> None:
    await _activity(served)
    out = tmp_path / "evidence-q1-2026.md"
    written = await _run("compliance", "evidence", "--since", "2026-01-01", "--out", str(out))
    assert written.exit_code == 0, written.output
    assert f"wrote {out}: evidence of acme from 2026-01-01T00:00:00Z" in written.output
    assert out.read_text().startswith("# Compliance evidence pack: acme\n")
    vkey = await _vkey(served)
    assert f"--key {vkey}" in written.output
    checked = await _run("compliance", "verify", str(out), "--key", vkey)
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok: evidence of acme from 2026-01-01T00:00:00Z")


async def test_both_commands_print_json_with_json(served: Api, tmp_path: Path) -> None:
    out = tmp_path / "pack.json"
    written = await _run("compliance", "evidence", "--out", str(out), "--json")
    assert written.exit_code == 0, written.output
    result = _last_json(written)
    assert (result["format"], result["tenant_id"], result["path"]) == ("json", "acme", str(out))
    assert json.loads(out.read_text())["signature"]["digest"] == result["digest"]
    checked = await _run("compliance", "verify", str(out), "--key", await _vkey(served), "--json")
    assert checked.exit_code == 0, checked.output
    verified = _last_json(checked)
    assert (verified["ok"], verified["mode"], verified["digest"]) == (True, "offline", result["digest"])


async def test_an_edited_number_fails_with_one_line_that_names_its_place(served: Api, tmp_path: Path) -> None:
    await _activity(served)
    out = tmp_path / "evidence.md"
    assert (await _run("compliance", "evidence", "--out", str(out))).exit_code == 0
    out.write_text(out.read_text().replace("| Payments authorized | 1 |", "| Payments authorized | 0 |"))
    vkey = await _vkey(served)
    refused = await _run("compliance", "verify", str(out), "--key", vkey)
    assert refused.exit_code == 9
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: section 5 (Spend governance, CC5.2), line ")
    assert "(Payments authorized)" in lines[0]
    as_json = await _run("compliance", "verify", str(out), "--key", vkey, "--json")
    assert as_json.exit_code == 9
    found = json.loads(as_json.stderr)
    assert (found["code"], found["exit_code"]) == ("evidence_tampered", 9)
    assert found["error"].startswith("section 5 (Spend governance, CC5.2), line ")


async def test_verify_without_a_key_asks_the_server(served: Api, tmp_path: Path) -> None:
    out = tmp_path / "pack.json"
    assert (await _run("compliance", "evidence", "--out", str(out))).exit_code == 0
    confirmed = await _run("compliance", "verify", str(out), "--json")
    assert confirmed.exit_code == 0, confirmed.output
    assert _last_json(confirmed)["mode"] == "server"
    pack = json.loads(out.read_text())
    pack["sections"][0]["facts"]["tenant_id"] = "someone-else"
    out.write_text(json.dumps(pack))
    refused = await _run("compliance", "verify", str(out))
    assert refused.exit_code == 9
    assert "the server does not confirm this pack: section 1 (Identity), field tenant_id" in refused.stderr


async def test_a_file_without_a_known_extension_needs_a_format(served: Api, tmp_path: Path) -> None:
    refused = await _run("compliance", "evidence", "--out", str(tmp_path / "pack.txt"))
    assert refused.exit_code == 2
    assert "add --format md or json" in refused.stderr
    chosen = await _run("compliance", "evidence", "--out", str(tmp_path / "pack.txt"), "--format", "md")
    assert chosen.exit_code == 0, chosen.output
    assert (tmp_path / "pack.txt").read_text().startswith("# Compliance evidence pack")


async def test_a_malformed_key_or_time_is_refused_with_what_to_do(served: Api, tmp_path: Path) -> None:
    out = tmp_path / "pack.json"
    late = await _run("compliance", "evidence", "--out", str(out), "--since", "2026-01-01T00:00:00")
    assert late.exit_code == 2
    assert "needs a time zone" in late.stderr
    assert not out.exists()
    assert (await _run("compliance", "evidence", "--out", str(out))).exit_code == 0
    bad_key = await _run("compliance", "verify", str(out), "--key", "not-a-key")
    assert bad_key.exit_code == 2
    assert "--key is not a verifier key" in bad_key.stderr
