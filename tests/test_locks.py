"""The lock files in requirements/ are what every install takes (`make install`, the Dockerfile).

A dependency added to pyproject.toml without `make lock` would install nowhere; a lock entry without
its hashes would make pip refuse the whole file. Both are caught here, before an install is tried.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")

# The Linux x86_64, CPython 3.11 environment the locks are resolved for (`make lock`).
LOCKED_FOR = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def locked(name: str) -> dict[str, Version]:
    """Each pinned distribution of one lock file, checking that every pin carries a hash."""
    pins: dict[str, Version] = {}
    entry: str | None = None
    for line in (REQUIREMENTS / name).read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            assert line.rstrip().endswith("\\"), f"{name}: {line.strip()} has no hash"
            entry = canonicalize_name(match.group(1))
            pins[entry] = Version(match.group(2))
        elif line.strip().startswith("--hash=sha256:"):
            assert entry is not None
    assert pins, f"{name} pins nothing"
    return pins


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def requirement_lines(name: str) -> list[Requirement]:
    text = (REQUIREMENTS / name).read_text(encoding="utf-8")
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [
        ("lock.txt", declared(("export", "dev", "bench"))),
        ("runtime.txt", declared(("export",))),
        ("models-no-deps.txt", requirement_lines("models-no-deps.in")),
        ("malconv-gpl.txt", requirement_lines("malconv-gpl.in")),
    ],
)
def test_every_declared_requirement_is_locked_within_its_range(lock: str, wanted: list[Requirement]) -> None:
    pins = locked(lock)
    for requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate(LOCKED_FOR):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements/{lock}: run `make lock`"
        version = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {name}=={version}, outside {requirement}: run `make lock`"
        )


def test_the_runtime_lock_agrees_with_the_full_one() -> None:
    """The image runs the versions the suite ran with."""
    full, runtime = locked("lock.txt"), locked("runtime.txt")
    assert {name: version for name, version in runtime.items() if full.get(name) != version} == {}


def test_torch_is_the_cpu_build() -> None:
    """PyPI's Linux torch of the same version is a CUDA build that pulls several GB."""
    pins = locked("lock.txt")
    assert pins["torch"].local == "cpu"
    assert not [name for name in pins if name.startswith("nvidia-")]
