"""The tests' tiny KULLM stand-ins: the demo model (`inference.demo`), built once into `.cache/tiny-kullm`.

python -m testkit.tiny_model [DIR]     # build both (or reuse them), and the judge (testkit.judge_model); print the
                                       # GPT-NeoX one's directory
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

from inference import demo

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "tiny-kullm"


def cache_dir(base: Path = DEFAULT_CACHE, *, chat: bool = False) -> Path:
    """Where the model built by this exact training code (and its examples) lives."""
    return base / f"{demo.digest()}{'-chat' if chat else ''}-torch{version('torch').split('+')[0]}"


def build(target: Path | None = None, *, chat: bool = False) -> Path:
    """Return a directory holding the trained tiny model (`chat`: the KULLM3 stand-in), building it when missing.

    `KULLM_TINY_MODEL` names a GPT-NeoX one built earlier (the GPU bundle carries one), used as it is.
    """
    prebuilt = os.environ.get("KULLM_TINY_MODEL")
    if target is None and prebuilt and not chat:
        if not (Path(prebuilt) / demo.READY).exists():
            raise RuntimeError(f"KULLM_TINY_MODEL={prebuilt} holds no built tiny model (no {demo.READY})")
        return Path(prebuilt)
    return demo.build(target or cache_dir(chat=chat), chat=chat)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
    if len(sys.argv) == 1:
        build(chat=True)
        from testkit import judge_model

        judge_model.build()
