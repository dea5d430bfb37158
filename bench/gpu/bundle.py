"""`make gpu-bundle`: everything a bare GPU host lacks for the GPU check, in one ignored folder.

A GPU host of this workplace has Python 3.12 with torch, transformers, aiohttp and more, but no
redis-py, pydantic or `redis-server`, and no network. This fills `.gpu/` (or `--dest`) on an
ordinary machine:

- ``wheels/``: manylinux x86_64 / pure wheels for CPython 3.12 of every runtime dependency of the
  worker and `kullm ask` that ``bench/gpu/host-packages.txt`` does not list, plus the test runner
  CI uses, at the versions installed in this virtualenv (the versions CI tests). The dependency
  closure is walked from pyproject.toml with the host's markers, and a requirement that neither the
  bundle nor the host satisfies stops the bundle.
- ``redis/``: Debian's `redis-server` with every shared library it needs, the C library and its
  loader included, extracted from Debian's packages (not installed), started through
  ``bin/redis-server`` so the host's own glibc does not matter.
- ``model/``: the tests' tiny trained model (`KULLM_TINY_MODEL` points the tests at it).
- ``MANIFEST.txt``: what is inside, for which Python, made when.

    python -m bench.gpu.bundle [--dest .gpu]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
HOST_PACKAGES = Path(__file__).with_name("host-packages.txt")
TARGET_PYTHON = "3.12"
# The host's interpreter, for evaluating environment markers of requirements.
TARGET_MARKERS = {
    "python_version": TARGET_PYTHON,
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# Carried even where the host has its own: the GPU tests run under the same runner as CI.
TEST_RUNNER = ("pytest", "pytest-asyncio", "pytest-timeout", "pluggy", "iniconfig")
# `transformers serve`'s parts (the test extra's): the GPU check's engine benchmark streams from it.
SERVE = ("fastapi", "uvicorn", "openai")
# Carried too: the host's version is not known, and pydantic-core needs a recent one (typing_extensions.Sentinel).
ALWAYS_CARRY = (*TEST_RUNNER, "typing-extensions")
WHEEL_PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
)
# What the device tool may carry in all, working tree included.
CARRY_LIMIT_BYTES = 64 * 2**20


class BundleError(Exception):
    """The bundle cannot be made as asked; the message says what to do."""


@dataclass
class Closure:
    """The distributions to carry (name → version) and the host packages relied on."""

    carry: dict[str, str] = field(default_factory=dict)
    from_host: dict[str, str | None] = field(default_factory=dict)


def host_packages(path: Path = HOST_PACKAGES) -> dict[str, str | None]:
    """Canonical name → version (None where the version is not known) of what the GPU host has."""
    packages: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = version or None
    return packages


def project_roots(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The worker's and `kullm ask`'s requirements, the test runner and `transformers serve`'s parts."""
    project = tomllib.loads(pyproject.read_text())["project"]
    roots = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["worker"]]]
    tests = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return roots + [r for r in tests if canonicalize_name(r.name) in (*TEST_RUNNER, *SERVE)]


def resolve(roots: Iterable[Requirement], host: dict[str, str | None]) -> Closure:
    """Walk the requirements with the host's markers: carry what the host lacks, at this venv's versions."""
    closure = Closure()
    pending = list(roots)
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET_MARKERS):
            continue
        name = canonicalize_name(requirement.name)
        if name in host and name not in ALWAYS_CARRY:
            _check(requirement, host[name], "the GPU host has")
            closure.from_host[name] = host[name]
            continue
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise BundleError(f"{name} is needed on the GPU host but not installed here: run `make setup`") from None
        _check(requirement, version, "this virtualenv has")
        if name not in closure.carry:
            closure.carry[name] = version
            pending.extend(Requirement(r) for r in metadata.requires(name) or [])
    return closure


def _check(requirement: Requirement, version: str | None, where: str) -> None:
    if version is not None and not requirement.specifier.contains(Version(version), prereleases=True):
        raise BundleError(f"{requirement} is required, but {where} {requirement.name} {version}")


def download_wheels(closure: Closure, dest: Path) -> list[Path]:
    """One wheel per carried distribution, for CPython 3.12 on manylinux x86_64."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, version in sorted(closure.carry.items()):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        command += ["--no-deps", "--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp"]
        command += [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
        command += ["--dest", str(dest), f"{name}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BundleError(f"no CPython {TARGET_PYTHON} x86_64 wheel of {name}=={version}: {result.stderr[-800:]}")
    wheels = sorted(dest.glob("*.whl"))
    names = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    if names != set(closure.carry) or len(wheels) != len(closure.carry):
        raise BundleError(f"wheels and closure disagree: {sorted(names ^ set(closure.carry))} (stale {dest}?)")
    return wheels


def bundle_redis(dest: Path) -> str:
    """Debian's redis-server and its shared libraries, run through the bundled loader; returns its version."""
    if shutil.which("redis-server") is None:
        raise BundleError("redis-server is not installed here (its libraries are looked up from it): run `make redis`")
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as scratch:
        stage = Path(scratch) / "stage"
        _extract(["redis-tools"], Path(scratch), stage)
        binary = stage / "usr" / "bin" / "redis-check-rdb"  # Debian's redis-server is a link to it
        libraries = _shared_libraries(binary)
        _extract(sorted({_owner(path) for path in libraries.values()}), Path(scratch), stage)
        lib_dir = dest / "redis" / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        for soname in libraries:
            shutil.copy(_find(stage, soname), lib_dir / soname)
        (dest / "redis" / "bin").mkdir(parents=True, exist_ok=True)
        # Named redis-server: the binary picks its mode from the name it runs under.
        shutil.copy(binary, dest / "redis" / "bin" / "redis-server")
    launcher = dest / "bin" / "redis-server"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(
        "#!/bin/sh\n"
        "# Debian's redis-server, run with the loader and libraries it was built with (any host glibc).\n"
        'here=$(cd "$(dirname "$0")/.." && pwd)\n'
        'exec "$here/redis/lib/ld-linux-x86-64.so.2" --library-path "$here/redis/lib" '
        '"$here/redis/bin/redis-server" "$@"\n'
    )
    launcher.chmod(0o755)
    result = subprocess.run([str(launcher), "--version"], capture_output=True, text=True)
    if result.returncode != 0 or "Redis server" not in result.stdout:
        raise BundleError(f"the bundled redis-server does not start: {result.stdout}{result.stderr}")
    return result.stdout.strip()


def _extract(packages: list[str], scratch: Path, stage: Path) -> None:
    """`apt-get download` the packages (updating the lists once if needed) and unpack them into `stage`."""
    downloads = scratch / "debs"
    downloads.mkdir(exist_ok=True)
    command = ["apt-get", "download", "-q", *packages]
    if subprocess.run(command, cwd=downloads, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        result = subprocess.run(command, cwd=downloads, capture_output=True, text=True)
        if result.returncode != 0:
            raise BundleError(f"apt-get download {' '.join(packages)} failed: {result.stderr[-800:]}")
    for package in packages:
        (deb,) = downloads.glob(f"{package}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(stage)], check=True)


def _shared_libraries(binary: Path) -> dict[str, Path]:
    """Soname → path on this machine of every library the binary loads, the loader included."""
    output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libraries: dict[str, Path] = {}
    for line in output.splitlines():
        parts = line.split()
        if "not found" in line:
            raise BundleError(f"{binary.name} needs {parts[0]}, which is not installed here: run `make redis`")
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libraries[parts[0]] = Path(parts[2])
        elif parts and parts[0].startswith("/"):  # the loader: /lib64/ld-linux-x86-64.so.2 (0x…)
            libraries[Path(parts[0]).name] = Path(parts[0])
    return libraries


def _owner(path: Path) -> str:
    """The Debian package that ships a library (usr-merged paths tried both ways)."""
    candidates = {path, path.resolve()}
    candidates |= {Path("/usr" + str(c)) for c in list(candidates) if not str(c).startswith("/usr/")}
    candidates |= {Path(str(c).removeprefix("/usr")) for c in list(candidates) if str(c).startswith("/usr/")}
    for candidate in sorted(candidates):
        result = subprocess.run(["dpkg", "-S", str(candidate)], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].split(",")[0].strip()
    raise BundleError(f"no Debian package owns {path}")


def _find(stage: Path, soname: str) -> Path:
    matches = [p for p in stage.rglob(soname) if p.exists()]
    if not matches:
        raise BundleError(f"{soname} is not in the extracted packages")
    return matches[0].resolve()


def bundle_model(dest: Path) -> Path:
    """The tests' tiny trained model, built here (CPU) if it is not cached yet."""
    from testkit.tiny_model import build

    source = build()
    target = dest / "model"
    shutil.copytree(source, target)
    return target


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tracked_size() -> int:
    """Bytes of the working tree that travels with every device call."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def commit() -> str:
    """The commit the bundle was made from (the GPU host's copy of the tree may carry no .git)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return (head.stdout.strip() or "unknown") + (" with uncommitted changes" if dirty.stdout.strip() else "")


def make(dest: Path) -> str:
    """Fill `dest` anew; return the manifest."""
    started = time.monotonic()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    closure = resolve(project_roots(), host_packages())
    wheels = download_wheels(closure, dest / "wheels")
    redis_version = bundle_redis(dest)
    model = bundle_model(dest)
    total, budget = size_of(dest), CARRY_LIMIT_BYTES - tracked_size()
    if total > budget:
        raise BundleError(f"{dest} holds {total / 2**20:.1f} MiB; with the working tree only {budget / 2**20:.1f} fit")
    manifest = "\n".join(
        [
            f"GPU bundle made {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in {time.monotonic() - started:.0f} s "
            f"from commit {commit()}",
            f"python: {TARGET_PYTHON} (wheels for CPython {TARGET_PYTHON}, manylinux x86_64)",
            f"size: {total / 2**20:.1f} MiB",
            f"redis: {redis_version}",
            f"model: {model.relative_to(dest)}",
            "wheels:",
            *(f"  {w.name}" for w in wheels),
            "relied on from the host:",
            *(f"  {n}{'==' + v if v else ''}" for n, v in sorted(closure.from_host.items())),
        ]
    )
    (dest / "MANIFEST.txt").write_text(manifest + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=Path(os.environ.get("GPU_BUNDLE", ROOT / ".gpu")))
    args = parser.parse_args(argv)
    try:
        print(make(args.dest.resolve()))
    except BundleError as exc:
        print(f"gpu-bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
