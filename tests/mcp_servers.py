"""Real MCP servers for end-to-end tests: mcp-server-time (from the dev extras), server-everything (npm,
pinned in tests/servers/package.json and installed by `make test` into .mcp-servers/) and a tiny
in-repo server whose tools change on request. Missing servers fail the test, never skip it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EVERYTHING = ROOT / ".mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
CHANGING_TOOLS = ROOT / "tests/servers/changing_tools.py"


def time_server_params() -> StdioServerParameters:
    command = BIN / "mcp-server-time"
    if not command.exists():
        pytest.fail(f"{command} is missing: run `make test`, which installs the dev extras")
    return StdioServerParameters(command=str(command), args=[])


def everything_stdio_params() -> StdioServerParameters:
    return StdioServerParameters(command=_node(), args=[str(_everything()), "stdio"])


def changing_tools_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(CHANGING_TOOLS)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def everything_http() -> Iterator[str]:
    """server-everything over Streamable HTTP on a free port; yields its MCP endpoint URL."""
    port = free_port()
    process = start_everything_http(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)


def start_everything_http(port: int) -> subprocess.Popen[bytes]:
    """Start server-everything's Streamable HTTP server on `port` and wait until it accepts connections."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "PORT": str(port)}
    process = subprocess.Popen(
        [_node(), str(_everything()), "streamableHttp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_listening(process, port)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_listening(process: subprocess.Popen[bytes], port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server-everything exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a real process for readiness, not making time pass
    raise AssertionError(f"server-everything did not listen on port {port} within {timeout}s")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20+, then run `make test`")
    return node


def _everything() -> Path:
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING.relative_to(ROOT)} is missing: run `make test`, which installs it with npm")
    return EVERYTHING
