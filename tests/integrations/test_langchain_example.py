"""examples/langchain_agent.py runs as printed against a real `haldir serve`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import environment, haldir, serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "langchain_agent.py"


@pytest.mark.e2e
def test_the_langchain_example_governs_its_agent_against_a_real_server(tmp_path: Path) -> None:
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
    assert "session spent 0.01 USD" in run.stdout
    assert any(line.split()[:3] == ["tools/call", "delete_file", "denied"] for line in lines)
