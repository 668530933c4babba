"""Every example in examples/ runs as printed against one real `haldir serve`, each in a tenant of its own:
an allowed call recorded with its cost, a denied call the model reads and the ledger records as denied,
and (AutoGen) a held call's approval id with the approval request in the ledger. CrewAI's runs in an agent
application's venv (`.venv-clients`), the others in this one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dist.venvs import CLIENTS_VENV
from tests.e2e.server import Server, environment, haldir, serve

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).parents[2] / "examples"
SCOPES = "*"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("examples")
    env = environment(workdir)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, workdir) as running:
        yield running, env


def run_example(
    server: tuple[Server, dict[str, str]],
    tmp_path: Path,
    example: str,
    *,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`examples/<example>` run with an admin key of a tenant of its own (its policies stay its own)."""
    running, server_env = server
    created = haldir(
        "keys", "create", "--json", "--tenant", tmp_path.name, "--scopes", SCOPES, env=server_env
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    return subprocess.run(
        [python, str(EXAMPLES / example)],
        env={**(server_env if env is None else env), "HALDIR_URL": running.url, "HALDIR_API_KEY": key},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_langchain_example_governs_its_agent(
    server: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    run = run_example(server, tmp_path, "langchain_agent.py")

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "forecast: Sunny in Oslo, 21 °C"
    assert (
        lines[1]
        == "delete_file: Haldir refused this call (tool_denied): Tool 'delete_file' is on the deny list"
    )
    assert "session spent 0.01 USD" in run.stdout
    assert any(line.split()[:3] == ["tools/call", "delete_file", "denied"] for line in lines)


def test_the_autogen_example_governs_its_agent(server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    run = run_example(server, tmp_path, "autogen_agent.py")

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


def test_the_openai_agents_example_governs_its_agent(
    server: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    # the example disables tracing too, and its model is scripted: no OpenAI client may be used
    env = {**server[1], "OPENAI_AGENTS_DISABLE_TRACING": "1", "OPENAI_API_KEY": ""}
    run = run_example(server, tmp_path, "openai_agents_agent.py", env=env)

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


def test_the_crewai_example_governs_its_crew_from_an_agent_venv(
    server: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    if not (CLIENTS_VENV / ".installed").exists():
        pytest.fail(f"{CLIENTS_VENV} is missing: run `make .venv-clients/.installed`")
    agent_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HALDIR_", "PYTHON", "VIRTUAL_ENV"))
    }
    data = str(tmp_path / "crewai-data")  # CrewAI's own files, out of the user's home
    env = {**agent_env, "CREWAI_STORAGE_DIR": data, "XDG_DATA_HOME": data}
    run = run_example(
        server, tmp_path, "crewai_agent.py", python=str(CLIENTS_VENV / "bin/python"), env=env, timeout=180
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
