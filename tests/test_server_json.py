"""`server.json`, the MCP registries' metadata, names the real package, version, command and settings."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from haldir import __version__
from haldir.cli import mcp_server
from haldir.cli.app import app
from haldir.mcp.card import REGISTRY_NAME, REPOSITORY
from haldir.settings import ClientSettings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


def _server() -> dict[str, Any]:
    found: dict[str, Any] = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
    return found


def _project() -> dict[str, Any]:
    found: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return found


def test_it_names_the_server_as_the_readme_and_the_server_card_do() -> None:
    server = _server()
    assert server["$schema"] == SCHEMA
    assert server["name"] == REGISTRY_NAME
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", server["name"])
    # PyPI ownership: the registry looks for this line in the package's README.
    assert f"<!-- mcp-name: {server['name']} -->" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert server["repository"] == {"url": REPOSITORY, "source": "github"}
    assert 1 <= len(server["description"]) <= 100


def test_it_names_the_package_and_version_this_repository_builds() -> None:
    server, project = _server(), _project()
    assert server["version"] == project["version"] == __version__
    (package,) = server["packages"]
    assert package["registryType"] == "pypi"
    assert package["registryBaseUrl"] == "https://pypi.org"
    assert package["identifier"] == project["name"]
    assert package["version"] == project["version"]


def test_its_command_serves_the_governance_server_over_stdio() -> None:
    (package,) = _server()["packages"]
    assert package["transport"] == {"type": "stdio"}
    assert package["runtimeHint"] == "uvx"
    # `uvx haldir <arguments>` runs the `haldir` script with the package arguments.
    assert _project()["scripts"]["haldir"] == "haldir.cli.app:main"
    arguments = [argument["value"] for argument in package["packageArguments"]]
    assert all(argument["type"] == "positional" for argument in package["packageArguments"])
    command = next(command for command in app.registered_commands if command.name == arguments[0])
    assert command.callback is mcp_server.mcp  # haldir.mcp.stdio.main, as haldir-mcp runs it
    assert len(arguments) == 1


def test_its_environment_variables_are_client_settings() -> None:
    (package,) = _server()["packages"]
    variables = {variable["name"]: variable for variable in package["environmentVariables"]}
    settings = {f"HALDIR_{name.upper()}": field for name, field in ClientSettings.model_fields.items()}
    assert set(variables) == set(settings)
    assert variables["HALDIR_API_KEY"]["isRequired"] is True
    assert variables["HALDIR_API_KEY"]["isSecret"] is True
    assert variables["HALDIR_URL"]["default"] == settings["HALDIR_URL"].default
