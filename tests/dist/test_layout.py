"""haldir-client and haldir split src/haldir between them, file by file, at one version."""

from __future__ import annotations

import tarfile

from packaging.requirements import Requirement

import haldir
from tests.dist.venvs import CLIENT, ROOT, Dists, pyproject, source_files, wheel_files, wheel_requirements


def test_both_distributions_and_the_package_carry_one_version() -> None:
    server, client = pyproject(ROOT)["project"], pyproject(CLIENT)["project"]
    assert server["version"] == client["version"] == haldir.__version__
    assert f"haldir-client=={haldir.__version__}" in server["dependencies"]


def test_the_server_excludes_exactly_the_paths_the_client_ships() -> None:
    paths = pyproject(CLIENT)["tool"]["hatch"]["build"]["hooks"]["custom"]["paths"]
    excluded = pyproject(ROOT)["tool"]["hatch"]["build"]["targets"]["wheel"]["exclude"]
    assert excluded == [f"/src/haldir/{path}" for path in paths]


def test_the_server_offers_each_client_extra_whose_framework_fits_beside_it() -> None:
    client_extras = set(pyproject(CLIENT)["project"]["optional-dependencies"])
    server_extras = pyproject(ROOT)["project"]["optional-dependencies"]
    # CrewAI pins mcp<2; the server needs mcp>=2.3.
    assert client_extras - set(server_extras) == {"crewai"}
    for extra in client_extras - {"crewai"}:
        assert server_extras[extra] == [f"haldir-client[{extra}]=={haldir.__version__}"]


def test_the_two_wheels_ship_every_file_of_the_package_once(dists: Dists) -> None:
    client, server = wheel_files(dists.client_wheel), wheel_files(dists.server_wheel)
    assert client & server == set()
    assert client | server == source_files()


def test_the_client_wheel_holds_the_public_surface_and_none_of_the_server(dists: Dists) -> None:
    client = wheel_files(dists.client_wheel)
    assert {"haldir/__init__.py", "haldir/py.typed", "haldir/errors.py", "haldir/client/sync.py"} <= client
    tops = {name.split("/")[1] for name in client}
    assert tops.isdisjoint({"cli", "store", "http", "mcp", "web", "governor", "proxy", "webhooks"})


def test_the_client_sdist_holds_the_files_its_wheel_ships(dists: Dists) -> None:
    with tarfile.open(dists.client_sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames()}
    shipped = {name.removeprefix("src/") for name in names if name.startswith("src/haldir/")}
    assert shipped == wheel_files(dists.client_wheel)
    assert {"pyproject.toml", "hatch_build.py", "README.md"} <= names


def test_the_client_wheel_requires_no_part_of_the_server_stack(dists: Dists) -> None:
    requirements = [Requirement(line) for line in wheel_requirements(dists.client_wheel)]
    names = sorted(req.name for req in requirements if req.marker is None)
    assert names == ["cryptography", "httpx", "orjson", "pydantic", "pydantic-settings", "rfc8785"]
