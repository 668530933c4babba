"""Test helpers shared by every suite: a fake clock, store set-up, and reading governed calls in a ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 4, 5, 19, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def admitted_calls(entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The admitted calls among ledger entries (oldest first), in the order they were admitted: each
    call's `admit` entry and its one `finish` entry, which comes after it and carries the same call_id.
    An outcome is recorded after the call's answer, so a finish may come after later calls' entries.
    Every other `tools/call` entry is a refusal, and no outcome is missing or recorded twice."""
    calls = [entry for entry in entries if entry["action"] == "tools/call"]
    refusals = [entry for entry in calls if entry["status"] == "denied"]
    assert all("phase" not in entry["details"] for entry in refusals)
    admits = [entry for entry in calls if entry["details"].get("phase") == "admit"]
    finishes = [entry for entry in calls if entry["details"].get("phase") == "finish"]
    assert len(refusals) + len(admits) + len(finishes) == len(calls)
    by_call = {entry["details"]["call_id"]: entry for entry in finishes}
    assert len(by_call) == len(finishes) == len(admits) == len({a["details"]["call_id"] for a in admits})
    pairs = []
    for admit in admits:
        finish = by_call[admit["details"]["call_id"]]
        assert admit["details"]["call_id"].startswith("call_")
        assert calls.index(admit) < calls.index(finish)
        assert (admit["status"], admit["flagged"]) == ("ok", False)
        assert (finish["tool"], finish["session_id"]) == (admit["tool"], admit["session_id"])
        pairs.append((admit, finish))
    return pairs


def call_outcomes(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each `tools/call` among ledger entries (oldest first) once, in the order it was decided: its tool
    and "denied", or its tool and how it ended (its finish entry's status); see `admitted_calls`."""
    ended = {admit["entry_id"]: finish["status"] for admit, finish in admitted_calls(entries)}
    return [
        (entry["tool"], "denied" if entry["status"] == "denied" else ended[entry["entry_id"]])
        for entry in entries
        if entry["action"] == "tools/call"
        and (entry["status"] == "denied" or entry["details"]["phase"] == "admit")
    ]


def outcomes_pending(entries: list[dict[str, Any]]) -> set[str]:
    """The call_ids of admitted calls among ledger entries whose outcome is not among them yet."""
    phases: dict[str, set[str]] = {"admit": set(), "finish": set()}
    for entry in entries:
        if entry["action"] == "tools/call" and entry["details"].get("phase") in phases:
            phases[entry["details"]["phase"]].add(entry["details"]["call_id"])
    return phases["admit"] - phases["finish"]
