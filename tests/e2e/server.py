"""Real `haldir` processes for end-to-end tests: started on a free port, always stopped."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HALDIR = str(Path(sys.executable).parent / "haldir")
KEY = re.compile(r"hld_[A-Za-z0-9]{48}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALDIR_")}
    # One worker process unless a test asks for more: each worker starts its own stdio upstreams, and the
    # tests' stateful upstreams (tools that grow or drift on request) must be one process to be coherent.
    env.update(HALDIR_DATA_DIR=str(data_dir), HALDIR_LOG_LEVEL="warning", HALDIR_WORKERS="1")
    if database_url:
        env["HALDIR_DATABASE_URL"] = database_url
    return env


def haldir(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HALDIR, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path

    def printed_keys(self) -> list[str]:
        """The distinct API keys the process printed (the first start prints one, twice)."""
        return sorted(set(KEY.findall(self.stdout.read_text())))


@contextmanager
def serve(env: dict[str, str], workdir: Path, *, haldir: str = HALDIR) -> Iterator[Server]:
    """`haldir serve` (this venv's, or the `haldir` given) on a free port, run in `workdir`, until ready."""
    port = free_port()
    stdout = workdir / f"serve-{port}.out"
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            [haldir, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, stdout=stdout)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_ready(server: Server, timeout: float = 90) -> None:  # a first start on loaded cores is slow
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"server exited with {server.process.returncode}: {server.stdout.read_text()}"
            )
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a real process for readiness, not making time pass
    raise AssertionError(f"server not ready after {timeout}s: {server.stdout.read_text()}")
