"""`haldir backup` of a SQLite store of `--entries` ledger entries while a server keeps writing to it, and
`haldir restore` of that file (which verifies every entry) into a new data dir.

    .venv/bin/python bench/backup.py --entries 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from common import HALDIR, HOST, free_port, haldir, machine, running_server, server_env, wait_ready
from ledger import BulkLog, load_sqlite, tenant_in


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        live, restored = Path(tmp) / "live", Path(tmp) / "restored"
        env = server_env(live, None)
        haldir(env, "migrate", "up")
        url = f"sqlite:///{live / 'haldir.db'}"
        tenant = asyncio.run(tenant_in(url, "bulk"))
        log = BulkLog(tenant.principal.tenant_id)
        began = time.perf_counter()
        load_sqlite(url, log, args.entries)
        loaded = time.perf_counter() - began
        port = free_port()
        base = f"http://{HOST}:{port}"
        with running_server(env, port, live / "server.log") as proc:
            wait_ready(proc, base, live / "server.log")
            stop, acked = threading.Event(), [0]
            writer = threading.Thread(target=_write, args=(base, tenant.key, tenant.session_id, stop, acked))
            writer.start()
            time.sleep(1)  # the writer is writing before the copy starts
            before = acked[0]
            backup, backup_wall = _timed(env, "backup", "--out", f"{tmp}/b.tar", "--keys-out", f"{tmp}/k.tar")
            during = acked[0] - before
            stop.set()
            writer.join()
        restore_env = server_env(restored, None)
        restore, restore_wall = _timed(
            restore_env, "restore", f"{tmp}/b.tar", "--data-dir", str(restored), "--keys", f"{tmp}/k.tar"
        )
        size = Path(f"{tmp}/b.tar").stat().st_size
    print(machine(load))
    print(f"\nloaded {log.size} bulk entries in {loaded:.0f} s; backup file {size / 2**20:.1f} MiB\n")
    print("| step | in the command, s | wall incl. start-up, s | notes |")
    print("|---|---:|---:|---|")
    print(
        f"| `haldir backup` | {backup['seconds']:.2f} | {backup_wall:.2f} | "
        f"{backup['entries']} entries, {backup['bytes'] / 2**20:.1f} MiB; the server acknowledged "
        f"{during} `POST /v1/audit` meanwhile |"
    )
    print(
        f"| `haldir restore` | {restore['seconds']:.2f} | {restore_wall:.2f} | "
        f"every entry re-verified; Vault {restore['vault']} |"
    )


def _timed(env: dict[str, str], *args: str) -> tuple[dict[str, object], float]:
    began = time.perf_counter()
    done = subprocess.run([HALDIR, *args, "--json"], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"haldir {args[0]} exited {done.returncode}: {done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result, wall


def _write(base: str, key: str, session_id: str, stop: threading.Event, acked: list[int]) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while not stop.is_set():
            made = client.post("/v1/audit", json={"session_id": session_id, "tool": "t", "action": "a"})
            if made.status_code != 201:
                raise SystemExit(f"write failed during the backup: {made.status_code} {made.text}")
            acked[0] += 1


if __name__ == "__main__":
    main()
