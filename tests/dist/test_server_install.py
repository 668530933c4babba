"""`pip install haldir` brings the server with haldir-client beside it, each file once, and `haldir serve`
works from the installed wheels alone."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.dist.venvs import Dists, clean_env, make_venv, pip, run_python, source_files
from tests.e2e.server import free_port

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 30

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
    _serve_until_ready(haldir, env, tmp_path)


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def _serve_until_ready(haldir: str, env: dict[str, str], cwd: Path) -> None:
    port = free_port()
    out = cwd / "serve.out"
    with out.open("wb") as log:
        process = subprocess.Popen(
            [haldir, "serve", "--port", str(port)], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, f"haldir serve exited {process.returncode}: {out.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a real process for readiness, not making time pass
        raise AssertionError(f"haldir serve not ready after {READY_TIMEOUT_S}s: {out.read_text()}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
