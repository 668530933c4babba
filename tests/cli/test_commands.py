"""The command line's shape: every command takes --json, and errors are one line."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from haldir.cli.app import app


def _leaves(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    children = getattr(command, "commands", None)
    if not children:
        return [(path, command)]
    return [leaf for name, child in children.items() for leaf in _leaves(child, (*path, name))]


def test_every_command_takes_json() -> None:
    root = typer.main.get_command(app)
    leaves = _leaves(root)

    missing = [
        " ".join(path) for path, command in leaves if not any("--json" in p.opts for p in command.params)
    ]  # type: ignore[attr-defined]

    assert len(leaves) > 25
    assert missing == []


def test_an_error_with_json_is_one_json_object_on_stderr(monkeypatch: object) -> None:
    runner = CliRunner()

    result = runner.invoke(app, ["overview", "--json"], env={"HALDIR_API_KEY": "", "HALDIR_URL": ""})

    assert result.exit_code == 3
    assert result.stdout == ""
    error = json.loads(result.stderr)
    assert error == {"error": error["error"], "code": "unauthenticated", "exit_code": 3}
    assert "haldir login" in error["error"]


def test_an_error_without_json_is_one_line() -> None:
    result = CliRunner().invoke(app, ["status"], env={"HALDIR_API_KEY": ""})

    assert result.exit_code == 3
    assert result.stderr.startswith("error: no API key")
    assert result.stderr.count("\n") == 1
