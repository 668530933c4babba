"""The Markdown form of a compliance evidence pack: the sections as tables for a person, and at the end the
pack's canonical JSON in a fenced block for a verifier, which re-renders the text above it from that JSON.

Rendering is a pure function of the pack (its sections' facts in field order), so a file is genuine only if
it is, byte for byte, the rendering of the signed pack it ends with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import rfc8785

from haldir.errors import EvidenceTampered

JSON_FENCE: Final = "```json"
_HEADING = re.compile(r"## ([0-9]+)\. (.+?)(?: · SOC 2 (\S+))?")
_ESCAPED = re.compile(r"([\\`*_\[\]<>|~&#])")
_WORDS: Final = {"usd": "(USD)", "id": "ID", "aad": "AAD", "percent": "(%)"}


def render_markdown(pack: Mapping[str, Any]) -> str:
    """The Markdown document of a signed pack whose sections' facts are in field order."""
    identity = pack["sections"][0]["facts"]
    signature = pack["signature"]
    lines = [
        f"# Compliance evidence pack: {_escape(identity['tenant_id'])}",
        "",
        f"Period {identity['period_since']} to {identity['period_until']} (UTC), generated "
        f"{identity['generated_at']} by {_escape(identity['generator'])}.",
        "",
        f"Signed with the ledger's log key `{signature['key']}`; SHA-256 of sections 1-7: "
        f"`{signature['digest']}`. Check it offline with `haldir compliance verify FILE --key VKEY`, where "
        "VKEY is the log's public key from a source you trust. The signed JSON of this pack ends the file, "
        "and the text above it must be exactly its rendering.",
        "",
        "| # | Section | SOC 2 | SHA-256 |",
        "| --- | --- | --- | --- |",
    ]
    digests = {item["section"]: item["digest"] for item in signature["section_digests"]}
    for section in [*pack["sections"], signature]:
        digest = digests.get(section["section"])
        lines.append(
            f"| {section['section']} | {_escape(section['title'])} | {section['criterion'] or '—'} | "
            f"{f'`{digest}`' if digest else 'signs 1-7'} |"
        )
    for section in pack["sections"]:
        lines += ["", _heading(section), ""]
        lines += _facts(section["facts"])
    lines += ["", _heading(signature), ""]
    lines += _facts(
        {name: value for name, value in signature.items() if name not in _HEADER | {"section_digests"}}
    )
    lines += ["", "## Signed pack", "", JSON_FENCE, rfc8785.dumps(dict(pack)).decode(), "```", ""]
    return "\n".join(lines)


_HEADER: Final = frozenset({"section", "id", "title", "criterion"})


def signed_block(text: str) -> str:
    """The one line of JSON in the fenced block that ends a Markdown pack."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or lines[-2] != "```" or lines[-4] != JSON_FENCE:
        raise EvidenceTampered(
            "the file does not end in the pack's signed JSON block (a ```json line, one line of JSON, a ``` "
            "line and a newline): it was cut or edited, or it is not an evidence pack",
            section=None,
            field=None,
        )
    return lines[-3]


def check_markdown(text: str, pack: Mapping[str, Any]) -> None:
    """Raise `EvidenceTampered` unless `text` is exactly the rendering of `pack`, naming the first line
    that differs and the section it is in."""
    expected = render_markdown(pack)
    if text == expected:
        return
    found, wanted = text.split("\n"), expected.split("\n")
    index = next(
        (i for i, (a, b) in enumerate(zip(found, wanted, strict=False)) if a != b),
        min(len(found), len(wanted)),
    )
    section, title = _section_of(wanted[: index + 1])
    line = wanted[index] if index < len(wanted) else ""
    field = _row_label(line)
    place = f"section {section} ({title})" if section else "the heading"
    if index >= len(wanted) - 4:
        place, field = "the signed JSON block", None
    shown_field = f" ({field})" if field else ""
    got = found[index] if index < len(found) else "(end of file)"
    raise EvidenceTampered(
        f"{place}, line {index + 1}{shown_field}: the file says {_short(got)}, the signed pack renders "
        f"{_short(line or '(end of file)')}",
        section=section,
        field=field,
        line=index + 1,
    )


def _heading(section: Mapping[str, Any]) -> str:
    criterion = f" · SOC 2 {section['criterion']}" if section["criterion"] else ""
    return f"## {section['section']}. {_escape(section['title'])}{criterion}"


def _facts(facts: Mapping[str, Any]) -> list[str]:
    rows = ["| Field | Value |", "| --- | --- |"]
    after: list[str] = []
    for name, value in facts.items():
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            after += ["", f"### {_label(name)}", "", *_records(value)]
        elif isinstance(value, str) and "\n" in value:
            fence = "`" * max(3, _longest_run(value, "`") + 1)
            after += ["", f"### {_label(name)}", "", f"{fence}text", *value.rstrip("\n").split("\n"), fence]
        else:
            rows.append(f"| {_label(name)} | {_value(value)} |")
    return rows + after


def _records(items: list[Any]) -> list[str]:
    if not items:
        return ["None."]
    names = list(items[0])
    lines = ["| " + " | ".join(_label(name) for name in names) + " |", "|" + " --- |" * len(names)]
    for item in items:
        lines.append("| " + " | ".join(_value(item.get(name)) for name in names) + " |")
    return lines


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value) if value else "—"
    return _escape(str(value))


def _escape(text: str) -> str:
    """One line of table text: Markdown's special characters escaped, line breaks as spaces."""
    return _ESCAPED.sub(r"\\\1", text.replace("\r", " ").replace("\n", " "))


def _label(name: str) -> str:
    text = " ".join(_WORDS.get(word, word) for word in name.split("_"))
    return text[:1].upper() + text[1:]


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


def _section_of(lines: list[str]) -> tuple[int | None, str]:
    for line in reversed(lines):
        match = _HEADING.fullmatch(line)
        if match:
            criterion = f", {match.group(3)}" if match.group(3) else ""
            return int(match.group(1)), f"{match.group(2)}{criterion}"
    return None, ""


def _row_label(line: str) -> str | None:
    if not line.startswith("| ") or line.startswith("| ---"):
        return None
    return line[2:].split(" | ", 1)[0] or None


def _short(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
