"""`pip install haldir` brings the server with haldir-client beside it, each file once, and `haldir serve`
works from the installed wheels alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.dist.venvs import Dists, clean_env, make_venv, pip, run_python, source_files
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e

# The files each distribution installed into the haldir package, from their RECORDs (bytecode compiled at
# install aside), and where haldir is.
RECORDS = """
import importlib.metadata as m, json, haldir.cli
def files(name):
    return sorted(str(f) for f in m.files(name) if f.parts[0] == "haldir" and "__pycache__" not in f.parts)
files = {name: files(name) for name in ("haldir", "haldir-client")}
print(json.dumps(files | {"cli": haldir.cli.__file__}))
"""


def test_the_server_wheel_installs_with_the_client_wheel_and_serves(dists: Dists, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    pip(python, "install", "--quiet", str(dists.client_wheel), str(dists.server_wheel))
    pip(python, "check")
    report = json.loads(run_python(python, RECORDS, cwd=tmp_path))
    assert report["cli"].startswith(str(tmp_path / "venv"))
    server, client = set(report["haldir"]), set(report["haldir-client"])
    assert server & client == set()
    assert server | client == source_files()

    haldir = str(tmp_path / "venv/bin/haldir")
    env = clean_env() | {"HALDIR_DATA_DIR": str(tmp_path / "data"), "HALDIR_WORKERS": "1"}
    assert "serve" in _run([haldir, "--help"], env, tmp_path)
    _run([haldir, "migrate", "up"], env, tmp_path)
    with serve(env, tmp_path, haldir=haldir) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout
