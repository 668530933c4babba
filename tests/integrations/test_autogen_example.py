"""examples/autogen_agent.py runs as printed against a real `haldir serve`: an allowed call recorded with
its cost, a denied call the model reads and the ledger records as denied, a held call's approval id
and the approval request in the ledger."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import environment, haldir, serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "autogen_agent.py"


@pytest.mark.e2e
def test_the_autogen_example_governs_its_agent_against_a_real_server(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        run = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env={**env, "HALDIR_URL": server.url, "HALDIR_API_KEY": server.printed_keys()[0]},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "forecast: Sunny in Oslo, 21 °C"
    assert (
        lines[1]
        == "delete_file: Haldir refused this call (tool_denied): Tool 'delete_file' is on the deny list"
    )
    assert re.fullmatch(
        r"send_email: Haldir refused this call \(approval_required\): .* "
        r"Approval apr_\S+ is pending; retry once a person approves it\.",
        lines[2],
    ), lines[2]
    assert "session spent 0.01 USD" in run.stdout
    trail = [line.split() for line in lines if line.startswith("  ")]
    assert trail == [
        ["tools/call", "forecast", "ok", "0.01"],
        ["tools/call", "forecast", "ok", "0.00"],
        ["tools/call", "delete_file", "denied", "0.00"],
        ["approval.request", "haldir.approvals", "ok", "0.00"],
    ]
