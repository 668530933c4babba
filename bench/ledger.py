"""Ledger benchmark: appends in-process and over HTTP, and proofs over a log of a million entries.

Run `python bench/ledger.py --help`; see bench/README.md for what is measured and recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.engine import make_url

from common import (
    HOST,
    Call,
    Result,
    drive,
    free_port,
    haldir,
    http_client,
    machine,
    measure,
    report,
    running_server,
    server_env,
    wait_ready,
)
from haldir.clock import SystemClock
from haldir.core import ids, merkle
from haldir.core.keys import Principal
from haldir.core.ledger import (
    GENESIS,
    EntryDraft,
    audit_record,
    canonical_bytes,
    draft_entry,
    hash_entry,
    timestamp_text,
)
from haldir.governor import Governor
from haldir.runtime import wire
from haldir.store.schema import epoch_micros
from haldir.store.sql import SqlStore

T0 = datetime(2026, 11, 21, tzinfo=UTC)
BENCH_BUDGET = Decimal(1_000_000_000)  # costs charge the session budget: make it one that never runs out
LOAD_CHUNK = 10_000  # rows per executemany / COPY
CHUNKS_PER_TRANSACTION = 10
CHECK_EVERY = 9973  # every so many bulk records are rebuilt through audit_record and compared
PROOF_WARMUP = 20
ENTRY_COLUMNS = (
    "tenant_id",
    "leaf_index",
    "entry_id",
    "record",
    "leaf_hash",
    "prev_hash",
    "entry_hash",
    "session_id",
    "agent_id",
    "tool",
    "status",
    "flagged",
    "cost",
    "created_at",
)
NODE_COLUMNS = ("tenant_id", "level", "idx", "hash")
SQLITE_INSERT_ENTRY = (
    "INSERT INTO ledger_entries (tenant_id, leaf_index, entry_id, record, leaf_hash, prev_hash, entry_hash, "
    "session_id, agent_id, tool, status, flagged, cost, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", default=None, help="Store URL (e.g. postgresql://…); default SQLite in a temp dir."
    )
    parser.add_argument("--appends", type=int, default=5000, help="Measured appends per in-process scenario.")
    parser.add_argument("--http-appends", type=int, default=3000, help="Measured POST /v1/audit per level.")
    parser.add_argument("--concurrency", default="32,256", help="Comma-separated concurrency levels.")
    parser.add_argument("--warmup", type=int, default=300, help="Unmeasured appends before measuring.")
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="Size of the log proofs are read from."
    )
    parser.add_argument("--proofs", type=int, default=2000, help="Measured proofs per in-process scenario.")
    parser.add_argument("--http-proofs", type=int, default=200, help="Measured proofs per HTTP scenario.")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="Seconds after which a scenario starts no new operation."
    )
    parser.add_argument("--parts", default="appends,http,proofs", help="Which parts to run, comma-separated.")
    args = parser.parse_args()
    args.levels = [int(level) for level in args.concurrency.split(",")]
    args.parts = set(args.parts.split(","))
    if min(args.levels) < 1 or args.appends < 1 or args.http_appends < 1 or args.warmup < 0:
        parser.error("concurrency levels, --appends and --http-appends must be >= 1, --warmup >= 0")
    if args.entries < 2 or args.proofs < 1 or args.http_proofs < 1:
        parser.error("--entries must be >= 2, --proofs and --http-proofs >= 1")
    if not args.parts <= {"appends", "http", "proofs"}:
        parser.error("--parts takes appends, http and proofs")
    return args


class Commits:
    """Counts the transactions committed on a store's writer, to tell how many entries each one carried."""

    def __init__(self, store: SqlStore) -> None:
        self.count = 0
        event.listen(store.engines.write.sync_engine, "commit", self._commit)

    def _commit(self, _conn: object) -> None:
        self.count += 1


@dataclass(frozen=True)
class Tenant:
    """A fresh tenant: the operator acting in it, one of its sessions and an API key of every scope."""

    principal: Principal
    session_id: str
    key: str


async def new_tenant(gov: Governor, name: str) -> Tenant:
    principal = Principal.operator(f"{name}-{secrets.token_hex(3)}")
    created = await gov.keys.create_key(principal, name="bench", scopes=["*"])
    session = await gov.sessions.create_session(
        principal, agent_id="bench", scopes=["read", "execute"], spend_limit=BENCH_BUDGET
    )
    assert created.value.value is not None
    return Tenant(principal, session.value.session_id, created.value.value)


async def tenant_in(url: str, name: str) -> Tenant:
    store = SqlStore.open(url, pool_size=1)
    try:
        return await new_tenant(wire(store=store, clock=SystemClock()), name)
    finally:
        await store.close()


def prepared(tenant_id: str, session_id: str, i: int) -> EntryDraft:
    return draft_entry(
        entry_id=ids.new_id("aud"),
        tenant_id=tenant_id,
        session_id=session_id,
        agent_id="bench",
        tool="stripe",
        action="charge",
        status="ok",
        cost_usd="0.01",
        details={"i": i},
        timestamp=datetime.now(UTC),
    )


async def timed(
    name: str, call: Call, *, count: int, concurrency: int, budget_s: float | None = None
) -> Result:
    """Measure one scenario; failures are counted and reported, and the run goes on."""
    result = Result(name)
    await measure(result, call, count=count, concurrency=concurrency, budget_s=budget_s)
    return result


class Appends:
    """Append scenarios on one store, each noting how many entries a commit carried."""

    def __init__(self, store: SqlStore, *, budget_s: float) -> None:
        self.store = store
        self.budget_s = budget_s
        self.commits = Commits(store)
        self.results: list[Result] = []
        self.notes: list[str] = []

    async def run(self, name: str, call: Call, *, count: int, concurrency: int) -> None:
        before = self.commits.count
        result = await timed(name, call, count=count, concurrency=concurrency, budget_s=self.budget_s)
        self.results.append(result)
        per_commit = result.requests / max(1, self.commits.count - before)
        self.notes.append(f"{name}: {per_commit:.1f} entries per commit")


async def inprocess_appends(url: str, args: argparse.Namespace) -> tuple[list[Result], list[str]]:
    """Governor.log_action and SqlLedger.append with prepared entries, at each concurrency level."""
    store = SqlStore.open(url)
    gov = wire(store=store, clock=SystemClock())
    appends = Appends(store, budget_s=args.budget)
    try:
        for level in args.levels:
            tenant = await new_tenant(gov, f"gov{level}")

            async def log(i: int, tenant: Tenant = tenant) -> None:
                await gov.budgets.log_action(
                    tenant.principal,
                    session_id=tenant.session_id,
                    tool="stripe",
                    action="charge",
                    cost_usd="0.01",
                    details={"i": i},
                )

            await timed("warm-up", log, count=args.warmup, concurrency=level)
            name = f"Governor.log_action, concurrency {level}"
            await appends.run(name, log, count=args.appends, concurrency=level)

            tenant = await new_tenant(gov, f"raw{level}")
            tenant_id = tenant.principal.tenant_id
            entries = [prepared(tenant_id, tenant.session_id, i) for i in range(args.appends)]

            async def append(i: int, entries: list[EntryDraft] = entries) -> None:
                await store.ledger.append(entries[i])

            name = f"SqlLedger.append (prepared), concurrency {level}"
            await appends.run(name, append, count=args.appends, concurrency=level)
    finally:
        await store.close()
    return appends.results, appends.notes


def serve(
    env: dict[str, str], data_dir: Path, work: Callable[[str], Awaitable[list[Result]]]
) -> list[Result]:
    """Run `work(base_url)` against a `haldir serve` that is stopped on every path."""
    port, log = free_port(), data_dir / f"server-{time.monotonic_ns()}.log"
    base = f"http://{HOST}:{port}"
    with running_server(env, port, log) as proc:
        wait_ready(proc, base, log)
        return asyncio.run(work(base))


async def http_appends(base: str, tenant: Tenant, args: argparse.Namespace) -> list[Result]:
    async with http_client(base, tenant.key, connections=max(args.levels)) as http:
        body = {"session_id": tenant.session_id, "tool": "stripe", "action": "charge"}

        async def send(http: httpx.AsyncClient, i: int) -> httpx.Response:
            return await http.post("/v1/audit", json={**body, "cost_usd": "0.01", "details": {"i": i}})

        results = []
        for level in [0, *args.levels]:  # 0: the warm-up, at the first level
            result = Result(f"POST /v1/audit, concurrency {level}")
            count, concurrency = (args.warmup, args.levels[0]) if level == 0 else (args.http_appends, level)
            await drive(
                http,
                result,
                send=send,
                expect=201,
                count=count,
                concurrency=concurrency,
                budget_s=args.budget,
            )
            results.append(result)
    return results[1:]


class BulkLog:
    """Entries and Merkle nodes exactly as SqlLedger.append stores them, built in Python for speed."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.size = 0
        self.head = GENESIS
        self._edge: dict[merkle.NodeId, bytes] = {}  # the right edge: the nodes the next chunk reads

    @staticmethod
    def entry_id(n: int) -> str:
        return f"aud_bulk{n:014d}"

    def record_text(self, n: int) -> str:
        """The canonical JSON of entry n, keys in RFC 8785 order; checked against audit_record by sample."""
        moment = timestamp_text(T0 + timedelta(microseconds=n))
        return (
            f'{{"action":"charge","agent_id":"agent-{n % 16}","charged_usd":"0.00","cost_usd":"0.01",'
            f'"details":{{"n":{n}}},'
            f'"entry_id":"{self.entry_id(n)}","flag_reason":null,"flagged":false,"session_id":"ses_bulk",'
            f'"status":"ok","tenant_id":"{self.tenant_id}","timestamp":"{moment}","tool":"stripe"}}'
        )

    def check(self, n: int, text: str) -> None:
        record = audit_record(
            entry_id=self.entry_id(n),
            tenant_id=self.tenant_id,
            session_id="ses_bulk",
            agent_id=f"agent-{n % 16}",
            tool="stripe",
            action="charge",
            status="ok",
            cost_usd="0.01",
            details={"n": n},
            flagged=False,
            flag_reason=None,
            timestamp=T0 + timedelta(microseconds=n),
        )
        if canonical_bytes(record) != text.encode():
            raise SystemExit(f"bulk record {n} is not what audit_record makes:\n{text}")

    def chunk(self, count: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The next `count` entry rows and the node rows they complete."""
        first = self.size
        texts = [self.record_text(n) for n in range(first, first + count)]
        leaves = [merkle.leaf_hash(text.encode()) for text in texts]
        stored = {node: self._edge[node] for node in merkle.batch_reads(first, count)}
        nodes = merkle.batch_completed_nodes(first, leaves, stored=stored)
        entries = []
        created = epoch_micros(T0)
        for n, text, leaf in zip(range(first, first + count), texts, leaves, strict=True):
            if n % CHECK_EVERY == 0:
                self.check(n, text)
            entry_hash = hash_entry(self.head, leaf)
            row = (self.tenant_id, n, self.entry_id(n), text, leaf, self.head, entry_hash)
            entries.append((*row, "ses_bulk", f"agent-{n % 16}", "stripe", "ok", False, 10_000, created + n))
            self.head = entry_hash
        self.size += count
        self._edge.update(nodes)
        right_edge = set(merkle.range_nodes(0, self.size))
        self._edge = {node: value for node, value in self._edge.items() if node in right_edge}
        return entries, [(self.tenant_id, node.level, node.index, value) for node, value in nodes]

    def root(self) -> bytes:
        return merkle.root(self.size, self._edge)


def load_sqlite(url: str, log: BulkLog, total: int) -> None:
    conn = sqlite3.connect(str(make_url(url).database), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        while log.size < total:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(CHUNKS_PER_TRANSACTION):
                if log.size >= total:
                    break
                entries, nodes = log.chunk(min(LOAD_CHUNK, total - log.size))
                conn.executemany(SQLITE_INSERT_ENTRY, entries)
                conn.executemany("INSERT INTO merkle_nodes VALUES (?, ?, ?, ?)", nodes)
            conn.execute("COMMIT")
        conn.execute(
            "INSERT INTO ledger_heads (tenant_id, size, head_hash) VALUES (?, ?, ?)",
            (log.tenant_id, log.size, log.head),
        )
    finally:
        conn.close()


async def load_postgres(url: str, log: BulkLog, total: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        while log.size < total:
            async with conn.transaction():
                for _ in range(CHUNKS_PER_TRANSACTION):
                    if log.size >= total:
                        break
                    entries, nodes = log.chunk(min(LOAD_CHUNK, total - log.size))
                    await conn.copy_records_to_table("ledger_entries", records=entries, columns=ENTRY_COLUMNS)
                    await conn.copy_records_to_table("merkle_nodes", records=nodes, columns=NODE_COLUMNS)
        await conn.execute(
            "INSERT INTO ledger_heads (tenant_id, size, head_hash) VALUES ($1, $2, $3)",
            log.tenant_id,
            log.size,
            log.head,
        )
        await conn.execute("VACUUM ANALYZE ledger_entries")
        await conn.execute("VACUUM ANALYZE merkle_nodes")
    finally:
        await conn.close()


def sqlite_size(url: str) -> list[str]:
    path = Path(str(make_url(url).database))
    sizes = [path.stat().st_size] + [p.stat().st_size for p in path.parent.glob(f"{path.name}-wal")]
    lines = [f"SQLite file {sum(sizes) / 2**20:.0f} MiB (with its WAL)"]
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8")
        lines += [f"{name}: {size / 2**20:.0f} MiB" for name, size in rows]
    except sqlite3.OperationalError:  # SQLite built without the dbstat table
        pass
    finally:
        conn.close()
    return lines


async def postgres_size(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT pg_database_size(current_database())")
        lines = [f"PostgreSQL database {total / 2**20:.0f} MiB"]
        for table in ("ledger_entries", "merkle_nodes"):
            heap = await conn.fetchval("SELECT pg_table_size($1)", table)
            indexes = await conn.fetchval("SELECT pg_indexes_size($1)", table)
            lines.append(f"{table}: {heap / 2**20:.0f} MiB table, {indexes / 2**20:.0f} MiB indexes")
        return lines
    finally:
        await conn.close()


async def inprocess_proofs(
    url: str, log: BulkLog, args: argparse.Namespace
) -> tuple[list[Result], list[str]]:
    store = SqlStore.open(url)
    gov = wire(store=store, clock=SystemClock())
    principal = Principal.operator(log.tenant_id)
    rng = random.Random(1)
    results: list[Result] = []
    try:
        size, root = log.size, log.root()

        async def inclusion(i: int) -> None:
            n = rng.randrange(size)
            proof = await gov.ledger.inclusion_proof(principal, log.entry_id(n))
            merkle.verify_inclusion(
                leaf_hash=proof.leaf_hash, index=n, size=size, proof=proof.proof, root=root
            )

        async def consistency(i: int) -> None:
            first = rng.randrange(1, size)
            proof = await gov.ledger.consistency_proof(principal, first=first, second=size)
            merkle.verify_consistency(
                first=first, second=size, first_root=proof.first_root, second_root=root, proof=proof.proof
            )

        budget = args.budget
        await timed("warm-up", inclusion, count=PROOF_WARMUP, concurrency=1, budget_s=budget)
        for name, call, concurrency in (
            ("Governor.inclusion_proof", inclusion, 1),
            ("Governor.inclusion_proof", inclusion, 32),
            ("Governor.consistency_proof", consistency, 1),
        ):
            label = f"{name} at {size:,}, concurrency {concurrency}"
            results.append(
                await timed(label, call, count=args.proofs, concurrency=concurrency, budget_s=budget)
            )

        # Appends to the big log read and write O(log n) nodes per commit.
        created = await gov.sessions.create_session(
            principal, agent_id="bench", scopes=["read"], spend_limit=BENCH_BUDGET
        )
        appends = Appends(store, budget_s=budget)

        async def log_action(i: int) -> None:
            await gov.budgets.log_action(principal, session_id=created.value.session_id, tool="t", action="a")

        for concurrency, count in ((1, 500), (32, args.appends)):
            label = f"Governor.log_action at {size:,}, concurrency {concurrency}"
            await appends.run(label, log_action, count=count, concurrency=concurrency)
    finally:
        await store.close()
    return results + appends.results, appends.notes


async def http_proofs(base: str, key: str, log: BulkLog, args: argparse.Namespace) -> list[Result]:
    rng = random.Random(2)
    size, root = log.size, log.root()
    async with http_client(base, key, connections=1) as http:

        async def inclusion(i: int) -> str | None:
            n = rng.randrange(size)
            response = await http.get(
                f"/v1/audit/inclusion-proof/{log.entry_id(n)}", params={"tree_size": size}
            )
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.text[:300]}"
            body = response.json()
            merkle.verify_inclusion(
                leaf_hash=bytes.fromhex(body["leaf_hash"]),
                index=n,
                size=size,
                proof=[bytes.fromhex(p) for p in body["proof"]],
                root=root,
            )
            return None

        async def consistency(i: int) -> str | None:
            first = rng.randrange(1, size)
            response = await http.get("/v1/audit/consistency-proof", params={"first": first, "second": size})
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.text[:300]}"
            body = response.json()
            merkle.verify_consistency(
                first=first,
                second=size,
                first_root=bytes.fromhex(body["first_root"]),
                second_root=root,
                proof=[bytes.fromhex(p) for p in body["proof"]],
            )
            return None

        budget = args.budget
        await timed("warm-up", inclusion, count=PROOF_WARMUP, concurrency=1, budget_s=budget)
        return [
            await timed(
                f"{name} at {size:,}, concurrency 1",
                call,
                count=args.http_proofs,
                concurrency=1,
                budget_s=budget,
            )
            for name, call in (
                ("GET /v1/audit/inclusion-proof/{id}", inclusion),
                ("GET /v1/audit/consistency-proof", consistency),
            )
        ]


def proofs(
    url: str, env: dict[str, str], data_dir: Path, args: argparse.Namespace
) -> tuple[list[Result], list[str]]:
    """Load the big log, then measure in-process and over HTTP."""
    tenant = asyncio.run(tenant_in(url, "bulk"))
    log = BulkLog(tenant.principal.tenant_id)
    began = time.perf_counter()
    if make_url(url).get_backend_name() == "sqlite":
        load_sqlite(url, log, args.entries)
        sizes = sqlite_size(url)
    else:
        asyncio.run(load_postgres(url, log, args.entries))
        sizes = asyncio.run(postgres_size(url))
    notes = [f"bulk load of {log.size:,} entries: {time.perf_counter() - began:.0f} s", *sizes]
    results, append_notes = asyncio.run(inprocess_proofs(url, log, args))
    notes += append_notes
    results += serve(env, data_dir, lambda base: http_proofs(base, tenant.key, log, args))
    return results, notes


def section(title: str, results: list[Result], notes: list[str]) -> None:
    """Print one part as soon as it is done, with the first failure of each scenario that had any."""
    notes = notes + [
        f"{r.name}: {len(r.failures)} failed; first: {r.failures[0]}" for r in results if r.failures
    ]
    print(f"### {title}\n\n{report(results, counted='ops', rate='ops/s')}\n", flush=True)
    print("".join(f"- {note}\n" for note in notes), flush=True)


def bench(args: argparse.Namespace, data_dir: Path) -> None:
    url = args.database_url or f"sqlite:///{data_dir / 'haldir.db'}"
    env = server_env(data_dir, url)
    haldir(env, "migrate", "up")
    if "appends" in args.parts:
        section("Appends in-process", *asyncio.run(inprocess_appends(url, args)))
    if "http" in args.parts:
        tenant = asyncio.run(tenant_in(url, "http"))
        section("Appends over HTTP", serve(env, data_dir, lambda base: http_appends(base, tenant, args)), [])
    if "proofs" in args.parts:
        section(f"Proofs and appends at {args.entries:,} entries", *proofs(url, env, data_dir, args))


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"store {store}, {time.strftime('%Y-%m-%d %H:%M')}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp:
        bench(args, Path(tmp))
    print(machine(load))


if __name__ == "__main__":
    main()
