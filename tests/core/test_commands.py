"""The operator's rule for command (stdio) upstreams: which tenants, which programs, matched exactly."""

from __future__ import annotations

import re

import pytest

from haldir.core.commands import CommandRule, program_entry

OPERATOR_ONLY = CommandRule(frozenset({"default"}))
LIMITED = CommandRule(frozenset({"default"}), ("npx", "/usr/local/bin/uvx"))


def test_a_tenant_outside_the_list_is_refused_with_how_the_operator_allows_it() -> None:
    reason = OPERATOR_ONLY.tenant_refusal("acme")
    assert reason is not None
    assert reason.startswith("tenant 'acme' may not run command upstreams: they run programs on the Haldir")
    assert "adding 'acme' to HALDIR_STDIO_TENANTS" in reason
    assert "HALDIR_STDIO_COMMANDS" in reason
    assert OPERATOR_ONLY.tenant_refusal("default") is None


def test_an_empty_tenant_list_allows_no_tenant() -> None:
    assert CommandRule(frozenset()).tenant_refusal("default") is not None


def test_without_a_program_list_any_command_and_env_may_run() -> None:
    assert OPERATOR_ONLY.program_refusal("../../tmp/anything", {"PATH": "/tmp", "LD_PRELOAD": "x"}) is None


@pytest.mark.parametrize("command", ["npx", "/usr/local/bin/uvx"])
def test_a_listed_bare_name_or_absolute_path_may_run(command: str) -> None:
    assert LIMITED.program_refusal(command, {"TOKEN": "t", "MY_PATH": "/x"}) is None


@pytest.mark.parametrize(
    "command",
    [
        "node",  # not listed
        "/usr/bin/npx",  # a bare name allows the name on the server's PATH, not any file of that name
        "/tmp/evil/npx",
        "./npx",
        "../npx",
        "bin/npx",
        "npx ",
        "uvx",  # an absolute path allows that path only
        "/usr/local/bin/../bin/uvx",
        "/usr/local/bin/./uvx",
        "//usr/local/bin/uvx",
        "/usr/local/bin//uvx",
        "/usr/local/bin/uvx/",
        "/usr/local/bin/uvx2",
    ],
)
def test_any_other_command_is_refused_however_it_is_spelled(command: str) -> None:
    reason = LIMITED.program_refusal(command, {})
    assert reason is not None
    assert reason.startswith(f"command {command!r} is not a program HALDIR_STDIO_COMMANDS allows")
    assert "(npx, /usr/local/bin/uvx)" in reason


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES"])
def test_variables_that_choose_the_code_are_refused_while_programs_are_limited(name: str) -> None:
    reason = LIMITED.program_refusal("npx", {name: "/tmp/evil"})
    assert reason is not None
    assert f"env ['{name}'] may not be set" in reason


@pytest.mark.parametrize("entry", ["npx", "uvx.exe", "/usr/local/bin/uvx", "/opt/mcp/server-time"])
def test_a_program_entry_is_a_bare_name_or_a_normal_absolute_path(entry: str) -> None:
    assert program_entry(entry) == entry


@pytest.mark.parametrize(
    "entry",
    [
        "",
        ".",
        "..",
        "bin/npx",
        "./npx",
        "../npx",
        "/usr/bin/../npx",
        "/usr//bin/npx",
        "//usr/bin/npx",
        "/usr/bin/",
    ],
)
def test_any_other_program_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"program name|absolute path in normal form"):
        program_entry(entry)
    with pytest.raises(ValueError, match=re.escape(repr(entry))):
        CommandRule(frozenset({"default"}), (entry,))
