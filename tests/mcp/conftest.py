"""A real `haldir serve` process shared by the MCP end-to-end tests, with the admin key it printed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.server import Server, environment, haldir, serve


@dataclass
class Running:
    server: Server
    admin_key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("mcp-server")
    env = environment(workdir)
    migrated = haldir("migrate", "up", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with serve(env, workdir) as server:
        keys = server.printed_keys()
        assert len(keys) == 1, server.stdout.read_text()
        yield Running(server, keys[0])
