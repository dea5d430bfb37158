"""Print the project's requirements (its core and the named extras) from pyproject.toml, one per line.

The images install these before copying the source, so a code change does not reinstall them:
    python requirements.py worker quantization > requirements.txt && pip install -c lock.txt -r requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(extras: list[str], pyproject: Path = Path("pyproject.toml")) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"no such extra in {pyproject}: {', '.join(unknown)}")
    found: list[str] = list(project["dependencies"])
    for extra in extras:
        found += [r for r in optional[extra] if r not in found]
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
