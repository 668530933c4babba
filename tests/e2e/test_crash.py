"""Crash durability: a real server under write load is killed with SIGKILL at random moments, several
times, on SQLite and on PostgreSQL; after each restart every acknowledged write is there, whole, and the
ledger, the checkpoints seen before the kill and the budgets all still agree (see tests/e2e/crashload.py).
`bench/crash.py` runs the same harness with many more kills."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import crashload
from tests.e2e.server import environment, haldir, serve

pytestmark = pytest.mark.e2e

KILLS = 3


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_every_acknowledged_write_survives_sigkill_whole(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = None
    if backend == "postgresql":
        database_url = request.getfixturevalue("scratch_postgres").url
    # Not secrets: the kill moments, reproducible from the seed a failure prints.
    seed = int(os.environ.get("HALDIR_CRASH_SEED", random.randrange(2**32)))  # noqa: S311
    rng = random.Random(seed)  # noqa: S311
    env = environment(tmp_path, database_url)
    assert haldir("migrate", "up", env=env).returncode == 0
    history = None
    for _ in range(KILLS):
        with serve(env, tmp_path) as server:
            if history is None:
                history = crashload.prepare(server.url, server.printed_keys()[0])
            else:
                after = crashload.check(server.url, history, history.rounds[-1:])
                assert after.problems == [], f"seed {seed}"
            crashload.load_until_killed(
                server.url, history, server.process.kill, delay=crashload.kill_delay(rng)
            )
            assert server.process.wait(timeout=30) == -9
    assert history is not None
    with serve(env, tmp_path) as server:
        found = crashload.check(server.url, history, history.rounds, every_version=True)

    acknowledged = sum((r.acknowledged() for r in history.rounds), start=Counter())
    assert found.problems == [], f"seed {seed}"
    assert [r.errors for r in history.rounds] == [[]] * KILLS, f"seed {seed}"
    assert found.found == acknowledged, f"seed {seed}"
    assert all(acknowledged[kind] > 0 for kind in crashload.KINDS), acknowledged
    assert found.checkpoints > 0
    assert found.sessions == len(crashload.KINDS) * KILLS
