"""The operator's rule for command (stdio) upstreams, which run programs on the Haldir server as its user:
which tenants may have them and, optionally, which programs they may start."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Variables that choose which code any program runs (the directories a bare name is looked up in, the
# dynamic loader's libraries): with a program allow-list, an upstream may not set them, or a listed
# program would start or load an unlisted one.
_LOADER_ENV = re.compile(r"PATH|LD_\w*|DYLD_\w*")


def program_entry(entry: str) -> str:
    """`entry` if it can be in the program allow-list: a bare name (no `/`), or an absolute path in
    normal form (no `.` or `..` segment, no repeated or trailing `/`); ValueError otherwise."""
    if "/" not in entry:
        if entry in ("", ".", "..") or not entry.isprintable():
            raise ValueError(f"{entry!r} is not a program name")
        return entry
    if not entry.startswith("/") or entry.startswith("//") or posixpath.normpath(entry) != entry:
        raise ValueError(
            f"{entry!r} must be a bare program name (`npx`) or an absolute path in normal form "
            f"(`/usr/bin/npx`); `..`, `.`, `//` and relative paths are refused"
        )
    return entry


@dataclass(frozen=True)
class CommandRule:
    """Who may run command upstreams. `programs` empty: any program, for the allowed tenants.

    A bare name in `programs` allows exactly that command, which the server looks up on its PATH; an
    absolute path allows exactly that path. Nothing is normalised or resolved before comparing, so
    `../bin/npx`, `/usr/bin/../bin/npx` or `/tmp/npx` never match `npx` or `/usr/bin/npx`.
    """

    tenants: frozenset[str]
    programs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.programs:
            program_entry(entry)

    def tenant_refusal(self, tenant_id: str) -> str | None:
        """Why `tenant_id` may not run command upstreams, or None when it may."""
        if tenant_id in self.tenants:
            return None
        return (
            f"tenant {tenant_id!r} may not run command upstreams: they run programs on the Haldir server; "
            f"the operator allows it by adding {tenant_id!r} to HALDIR_STDIO_TENANTS (comma-separated "
            "tenant ids), and HALDIR_STDIO_COMMANDS limits which programs"
        )

    def program_refusal(self, command: str, env: Mapping[str, str]) -> str | None:
        """Why `command`, started with `env`, is not an allowed program, or None when it is."""
        if not self.programs:
            return None
        if command not in self.programs:
            return (
                f"command {command!r} is not a program HALDIR_STDIO_COMMANDS allows "
                f"({', '.join(self.programs)}): a bare name there allows only that name, looked up on the "
                "server's PATH, and an absolute path only that exact path; the operator adds the program "
                "to HALDIR_STDIO_COMMANDS to allow it"
            )
        loader = sorted(name for name in env if _LOADER_ENV.fullmatch(name))
        if loader:
            return (
                f"env {loader} may not be set on a command upstream while HALDIR_STDIO_COMMANDS limits the "
                "programs: these variables choose which program or libraries run"
            )
        return None
