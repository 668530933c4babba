"""examples/openai_agents_agent.py runs as printed against a real `haldir serve`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import environment, haldir, serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "openai_agents_agent.py"


@pytest.mark.e2e
def test_the_openai_agents_example_governs_its_agent_against_a_real_server(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        run = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env={
                **env,
                "HALDIR_URL": server.url,
                "HALDIR_API_KEY": server.printed_keys()[0],
                "OPENAI_AGENTS_DISABLE_TRACING": "1",  # the example disables it too; the network is closed
                "OPENAI_API_KEY": "",  # no OpenAI client may be used: the model is scripted
            },
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
    assert lines[2] == "agent: Oslo is sunny; I was not allowed to delete /etc."
    assert "session spent 0.01 USD" in run.stdout
    ledger = [line.split() for line in lines if line.startswith("  ")]
    assert [entry[:3] for entry in ledger] == [
        ["tools/call", "forecast", "ok"],
        ["tools/call", "forecast", "ok"],
        ["tools/call", "delete_file", "denied"],
    ]
