"""Selects haldir-client's files from the repository's src/haldir (or, in its sdist, from its own src/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXCLUDED_NAMES = {"__pycache__"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-includes each path of `paths` under src/haldir that exists: as `haldir/…` in a wheel,
    as `src/haldir/…` in an sdist, so a wheel built from the sdist finds them in the same place."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "editable":
            return  # dev-mode-dirs puts src/ on sys.path; nothing is copied
        source = self._source()
        prefix = "haldir" if self.target_name == "wheel" else "src/haldir"
        included = build_data["force_include"]
        for name in self.config["paths"]:
            for path in _files(source / name):
                included[str(path)] = f"{prefix}/{path.relative_to(source).as_posix()}"

    def _source(self) -> Path:
        root = Path(self.root)
        for candidate in (root / "src/haldir", root.parent.parent / "src/haldir"):
            if (candidate / "__init__.py").is_file():
                return candidate
        message = f"no src/haldir in {root} or two levels up: build from the repository or the sdist"
        raise FileNotFoundError(message)


def _files(path: Path) -> list[Path]:
    """The files at `path`, a file or a folder's (recursively) without bytecode; none when it is absent."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and file.suffix not in EXCLUDED_SUFFIXES
        and not EXCLUDED_NAMES.intersection(file.relative_to(path).parts)
    )
