"""Crash durability at volume: `haldir serve` under write load, killed with SIGKILL at random moments many
times on one data dir, checked after every restart and once more at the end (tests/e2e/crashload.py).

Prints, per kind of write, how many the server acknowledged and how many the checks found whole.

    .venv/bin/python bench/crash.py --kills 30
    .venv/bin/python bench/crash.py --kills 30 --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives with the e2e tests

from tests.e2e import crashload
from tests.e2e.server import environment, haldir, serve

from common import machine, scratch_database


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--database-url", help="PostgreSQL server; a scratch database is made and dropped")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--min-delay", type=float, default=0.3, help="shortest load before a kill, s")
    parser.add_argument("--max-delay", type=float, default=3.0, help="longest load before a kill, s")
    args = parser.parse_args()
    load = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.database_url) as url:
        found, history, problems = run(Path(tmp), url, args)
    elapsed = time.perf_counter() - started
    report(args, load, elapsed, found, history, problems)
    if problems:
        sys.exit(1)


def run(
    data_dir: Path, url: str | None, args: argparse.Namespace
) -> tuple[crashload.Found, crashload.History, list[str]]:
    rng = random.Random(args.seed)
    env = environment(data_dir, url)
    migrated = haldir("migrate", "up", env=env)
    if migrated.returncode != 0:
        sys.exit(migrated.stderr)
    history: crashload.History | None = None
    problems: list[str] = []
    for kill in range(args.kills):
        with serve(env, data_dir) as server:
            if history is None:
                history = crashload.prepare(server.url, server.printed_keys()[0])
            else:
                problems += crashload.check(server.url, history, history.rounds[-1:]).problems
            delay = rng.uniform(args.min_delay, args.max_delay)
            crashload.load_until_killed(server.url, history, server.process.kill, delay=delay)
            server.process.wait(timeout=30)
        acknowledged = history.rounds[-1].acknowledged()
        print(f"kill {kill + 1}/{args.kills} after {delay:.2f} s: {dict(acknowledged)}", file=sys.stderr)
    assert history is not None
    with serve(env, data_dir) as server:
        found = crashload.check(server.url, history, history.rounds, every_version=True)
    problems += found.problems
    problems += [error for r in history.rounds for error in r.errors]
    return found, history, problems


def report(
    args: argparse.Namespace,
    load: tuple[float, float, float],
    elapsed: float,
    found: crashload.Found,
    history: crashload.History,
    problems: list[str],
) -> None:
    acknowledged = sum((r.acknowledged() for r in history.rounds), start=Counter[str]())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"## crash.py: {backend}, {args.kills} SIGKILLs, seed {args.seed}, commit {commit}\n")
    print(machine(load))
    print(f"- wall time: {elapsed:.0f} s\n")
    print("| write | acknowledged | found whole after the kills |")
    print("|---|---:|---:|")
    for kind in crashload.KINDS:
        print(f"| {kind} | {acknowledged[kind]} | {found.found[kind]} |")
    print(
        f"\n- signed checkpoints seen during load, each consistent with the final head: {found.checkpoints}"
    )
    print(f"- secret versions stored (acknowledged or not), each opening to a value sent: {found.versions}")
    print(f"- sessions whose `spent` equals the sum of their entries: {found.sessions}")
    print(
        f"- admitted calls whose finish a kill swallowed, finished after the restart: {found.reopened_calls}"
    )
    print(
        "- proxied calls admitted whose outcome entry a kill lost (recorded after the answer; the sweep "
        f"closes them as unknown after 5 minutes): {found.outcomes_pending}"
    )
    print(f"- problems: {len(problems)}")
    for problem in problems[:20]:
        print(f"  - {problem}")


if __name__ == "__main__":
    main()
