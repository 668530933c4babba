"""Where a server's CPU goes, by layer, from py-spy's raw (collapsed) profiles.

Each sample is charged to the layer of its innermost Python frame (self time): the HTTP server, the
framework, Haldir's own code (by package), SQLAlchemy, logging, the event loop. Without `--native` py-spy
charges C code to the Python frame that called it, so SQLite's own work shows under SQLAlchemy (a group
commit's COMMIT, fsync included, runs on a thread and is counted while it runs). Samples of threads that
only wait (uvicorn's supervisor pipe, idle thread-pool workers) are left out.

    python bench/layers.py PROFILE.txt [PROFILE.txt ...]

`bench/hotpath.py --profile DIR` writes one profile per endpoint into DIR.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (layer, a pattern of the frame's file path); the first match wins.
LAYERS = (
    ("Haldir: HTTP adapter and middleware", r"(^|/)haldir/http/"),
    ("Haldir: store (SQL, group commit, caches)", r"(^|/)haldir/store/"),
    ("Haldir: governor and core (auth, rules, ledger entries)", r"(^|/)haldir/(governor|core|errors)"),
    ("Haldir: other", r"(^|/)haldir/"),
    ("SQLAlchemy (with the driver's C code it calls)", r"(^|/)sqlalchemy/"),
    ("database driver (sqlite3, asyncpg)", r"(^|/)(sqlite3|asyncpg|aiosqlite)/"),
    ("FastAPI, Starlette, pydantic", r"(^|/)(fastapi|starlette|pydantic|pydantic_core|annotated_doc)/"),
    ("uvicorn, httptools", r"(^|/)(uvicorn|httptools|h11)/"),
    ("logging (structlog, logging)", r"(^|/)(structlog|logging)/"),
    ("cryptography, hashing, randomness", r"(^|/)(cryptography/|hashlib|hmac|secrets\.py|random\.py)"),
    ("JSON (json, orjson, rfc8785)", r"(^|/)(json/|orjson|rfc8785/)"),
    ("asyncio event loop", r"(^|/)(asyncio/|selectors\.py)"),
)
WAITING = re.compile(r"(always_pong|_recv_bytes|Thread\._wait_for_tstate_lock|_worker \(concurrent)")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def layer_of(frame: str) -> str:
    found = FRAME.match(frame)
    path = found.group("file") if found else frame
    for layer, pattern in LAYERS:
        if re.search(pattern, path):
            return layer
    return "other Python and C"


def summarize(profile: Path) -> tuple[int, Counter[str]]:
    layers: Counter[str] = Counter()
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if WAITING.search(frames[-1]):
            continue
        total += int(count)
        layers[layer_of(frames[-1])] += int(count)
    return total, layers


def main() -> None:
    profiles = [Path(arg) for arg in sys.argv[1:]]
    if not profiles:
        sys.exit(__doc__)
    summaries = {p.stem: summarize(p) for p in profiles}
    names = sorted({layer for _, layers in summaries.values() for layer in layers})
    order = sorted(names, key=lambda n: -sum(s[1][n] / max(s[0], 1) for s in summaries.values()))
    print(f"| layer (self time) | {' | '.join(summaries)} |")
    print(f"|---|{'---:|' * len(summaries)}")
    for name in order:
        cells = [f"{layers[name] / total:.0%}" if total else "–" for total, layers in summaries.values()]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"| samples | {' | '.join(str(total) for total, _ in summaries.values())} |")


if __name__ == "__main__":
    main()
