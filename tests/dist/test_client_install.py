"""An agent application installs haldir-client alone: `import haldir` works without the server's stack,
and the client fits beside CrewAI, which pins mcp<2 and openai<3 (the server needs mcp>=2.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dist.venvs import (
    CLIENTS_VENV,
    SERVER_STACK,
    Dists,
    make_venv,
    pip,
    run_python,
    wheel_files,
    wheel_requirements,
)

pytestmark = pytest.mark.e2e

# Imports every module of the JSON list argv[1], then says where haldir is, which of the packages of the
# JSON list argv[2] it can find, and which modules refused to import for want of an extra (each framework
# integration, whose framework is not installed: its ImportError names the extra to install).
IMPORT_ALL = """
import importlib, importlib.util, json, re, sys
import haldir
from haldir import AsyncHaldirClient, HaldirClient, verify_inclusion
needs_extra = []
for module in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
    except ImportError as missing:
        if not re.search(r"pip install '[a-z-]+\\[[a-z-]+\\]'", str(missing)):
            raise
        needs_extra.append(module)
print(json.dumps({
    "file": haldir.__file__,
    "found": [name for name in json.loads(sys.argv[2]) if importlib.util.find_spec(name) is not None],
    "needs_extra": needs_extra,
}))
"""

# Imports CrewAI and the client in one process; reports the versions that matter and the client's needs.
CREWAI_AND_CLIENT = """
import importlib.metadata as m, json
import crewai
from haldir import HaldirClient
versions = {name: m.version(name) for name in ("mcp", "openai", "crewai")}
print(json.dumps(versions | {"requires": sorted(m.requires("haldir-client") or [])}))
"""


def shipped_modules(dists: Dists) -> list[str]:
    return sorted(
        name.removesuffix("/__init__.py").removesuffix(".py").replace("/", ".")
        for name in wheel_files(dists.client_wheel)
        if name.endswith(".py")
    )


def test_the_client_wheel_alone_imports_every_module_without_the_server_stack(
    dists: Dists, tmp_path: Path
) -> None:
    python = make_venv(tmp_path / "venv")
    pip(python, "install", "--quiet", str(dists.client_wheel))
    pip(python, "check")
    modules, stack = json.dumps(shipped_modules(dists)), json.dumps(SERVER_STACK)
    report = json.loads(run_python(python, IMPORT_ALL, modules, stack, cwd=tmp_path))
    assert report["file"].startswith(str(tmp_path / "venv"))
    assert report["found"] == []
    integrations = [m for m in shipped_modules(dists) if m.startswith("haldir.integrations.")]
    assert integrations
    assert report["needs_extra"] == integrations
    installed = {entry["name"].lower() for entry in json.loads(pip(python, "list", "--format=json"))}
    assert installed.isdisjoint({*SERVER_STACK, "haldir"})


def test_the_client_shares_a_venv_with_crewai_and_its_mcp_below_2(dists: Dists, tmp_path: Path) -> None:
    python = CLIENTS_VENV / "bin/python"
    if not (CLIENTS_VENV / ".installed").exists():
        pytest.fail(f"{CLIENTS_VENV} is missing: run `make test`, which makes it")
    # Every installed distribution's requirements hold together: haldir-client's beside crewai's.
    pip(python, "check")
    # haldir-client there is editable (the CrewAI integration's tests run the tree's code); its requirements
    # are the wheel's.
    report = json.loads(run_python(python, CREWAI_AND_CLIENT, cwd=tmp_path))
    assert int(report["mcp"].split(".")[0]) < 2
    assert int(report["openai"].split(".")[0]) < 3
    assert sorted(report["requires"]) == wheel_requirements(dists.client_wheel)
