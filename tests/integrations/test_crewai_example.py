"""examples/crewai_agent.py runs as printed, in an agent application's venv (`.venv-clients`, with CrewAI),
against a real `haldir serve`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.dist.venvs import CLIENTS_VENV
from tests.e2e.server import environment, haldir, serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "crewai_agent.py"


@pytest.mark.e2e
def test_the_crewai_example_governs_its_crew_against_a_real_server(tmp_path: Path) -> None:
    if not (CLIENTS_VENV / ".installed").exists():
        pytest.fail(f"{CLIENTS_VENV} is missing: run `make .venv-clients/.installed`")
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    agent_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HALDIR_", "PYTHON", "VIRTUAL_ENV"))
    }
    data = str(tmp_path / "crewai-data")  # CrewAI's own files, out of the user's home
    with serve(env, tmp_path) as server:
        run = subprocess.run(
            [str(CLIENTS_VENV / "bin/python"), str(EXAMPLE)],
            env={
                **agent_env,
                "HALDIR_URL": server.url,
                "HALDIR_API_KEY": server.printed_keys()[0],
                "CREWAI_STORAGE_DIR": data,
                "XDG_DATA_HOME": data,
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert lines[:4] == [
        "forecast: Sunny in Oslo, 21 °C",
        "delete_file: Haldir refused this call (tool_denied): Tool 'delete_file' is on the deny list"
        " (code: tool_denied)",
        "agent: Oslo is sunny; I was not allowed to delete /etc.",
        "refused: delete_file (tool_denied)",
    ]
    assert "session spent 0.01 USD; the ledger:" in lines
    assert [line.split() for line in lines if line.startswith("  ")] == [
        ["tools/call", "forecast", "ok", "0.01"],
        ["tools/call", "forecast", "ok", "0.00"],
        ["tools/call", "delete_file", "denied", "0.00"],
    ]
