"""The CUDA packages PyPI's torch brings on Linux (its CUDA 13.0 build: the worker image's default
TORCH_CHANNEL=pypi), pinned in the lock beside everything else, so the image installs no version the lock does not
name.

    python docker/cuda_pins.py constraints/lock.txt           # add the pins the lock lacks (`make lock` runs it)
    python docker/cuda_pins.py --check constraints/lock.txt   # is every package of that install pinned?

Resolved from PyPI's metadata for the worker image's Python (CPython 3.11, manylinux x86_64) with pip's dry run:
no wheel is downloaded. The cu126 and cu128 lines come from download.pytorch.org, which the machines that make the
lock do not reach: their CUDA packages are not pinned yet.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

INDEX = "https://pypi.org/simple"
# The worker image's base: Debian 12 (glibc 2.36) on x86_64, so any manylinux wheel up to 2_36, and CPython 3.11.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)] + ["manylinux2014_x86_64", "linux_x86_64"]
TARGET = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
TARGET += ["--python-version", "3.11", "--implementation", "cp"]


def pins(text: str) -> dict[str, str]:
    """`name==version` lines by canonical name (comments and blank lines skipped)."""
    found = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            found[canonical(name)] = version
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(torch_pin: str, constraints: Path | None = None) -> dict[str, str]:
    """What `pip install torch==X` installs on the worker image, by canonical name (with the lock as constraints)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--isolated"]
    command += ["--index-url", INDEX, "--only-binary=:all:", *TARGET, "--report", "-", torch_pin]
    command += ["-c", str(constraints)] if constraints else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip could not resolve {torch_pin} from {INDEX}: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    return {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    lock = Path(next(a for a in argv if not a.startswith("--")))
    text = lock.read_text()
    pinned = pins(text)
    torch_pin = f"torch=={pinned['torch']}"
    if check:
        installed = resolve(torch_pin, lock)
        stray = sorted(f"{n}=={v}" for n, v in installed.items() if pinned.get(n) != v.split("+")[0])
        if stray:
            print(f"{lock} does not pin what {torch_pin} installs from PyPI: {', '.join(stray)}")
            return 1
        print(f"{lock} pins all {len(installed)} packages {torch_pin} installs from PyPI (CUDA 13.0)")
        return 0
    added = {n: v for n, v in resolve(torch_pin).items() if n not in pinned}
    comments = [line for line in text.splitlines() if line.startswith("#")]
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    lines += [f"{name}=={version}" for name, version in added.items()]
    lock.write_text("\n".join([*comments, *sorted(lines, key=str.lower)]) + "\n")
    print(f"{len(added)} pins added to {lock}: {', '.join(sorted(added)) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
