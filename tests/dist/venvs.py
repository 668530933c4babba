"""The two distributions built from this tree, and clean venvs to install them in.

`build` runs `python -m build` on each project (an sdist, then a wheel built from that sdist). `.venv-clients`
(made by `make unit`) is an agent application's venv: haldir-client, editable, with CrewAI; tests of
integrations whose framework cannot share `.venv` with the server run their agent there."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients/python"
CLIENTS_VENV = ROOT / ".venv-clients"
SOURCE = ROOT / "src/haldir"
# The server's stack: none of it may reach an agent application's venv through haldir-client.
SERVER_STACK = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "mcp", "typer")
INSTALL_TIMEOUT_S = 600


@dataclass(frozen=True)
class Dists:
    client_wheel: Path
    client_sdist: Path
    server_wheel: Path
    server_sdist: Path


def build(outdir: Path) -> Dists:
    for project in (CLIENT, ROOT):
        _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(project)])
    return Dists(
        client_wheel=_one(outdir, "haldir_client-*.whl"),
        client_sdist=_one(outdir, "haldir_client-*.tar.gz"),
        server_wheel=_one(outdir, "haldir-*.whl"),
        server_sdist=_one(outdir, "haldir-*.tar.gz"),
    )


def pyproject(project: Path) -> dict[str, Any]:
    with (project / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def source_files() -> set[str]:
    """Every file of src/haldir as `haldir/…`, as a wheel names it; bytecode aside."""
    return {
        "haldir/" + path.relative_to(SOURCE).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def wheel_files(wheel: Path) -> set[str]:
    """The files a wheel installs into the `haldir` package."""
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if name.startswith("haldir/")}


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(metadata).decode())
    return sorted(headers.get_all("Requires-Dist") or [])


def make_venv(path: Path) -> Path:
    """A venv with nothing in it (no pip either: `pip` drives it from outside); returns its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path / "bin/python"


def pip(python: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "pip", "--python", str(python), *args])


def run_python(python: Path, code: str, *args: str, cwd: Path) -> str:
    """Run `code` with `args` isolated (-I: no PYTHONPATH, no user site, not the current directory)."""
    return _run([str(python), "-I", "-c", code, *args], cwd=cwd)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("HALDIR_", "PYTHON", "VIRTUAL_ENV"))}


def _run(command: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{output}")
    return result.stdout


def _one(outdir: Path, pattern: str) -> Path:
    found = sorted(outdir.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {outdir}, found {[p.name for p in found]}"
    return found[0]
