"""The distributions are built once per test session, wheels from their sdists."""

from __future__ import annotations

import pytest

from tests.dist.venvs import Dists, build


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    return build(tmp_path_factory.mktemp("dist"))
