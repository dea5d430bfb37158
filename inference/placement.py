"""Where the model comes from and where it runs, decided before anything is downloaded or loaded.

- **Source** (`model_source`): the demo model is built here; a local directory is used as it is; otherwise
  the Hugging Face Hub is asked once, within HF_HUB_TIMEOUT_S. A Hub that cannot be reached is one line: the
  cached copy is used when there is one, else the worker stops naming HF_HUB_OFFLINE, `kullm download` and
  MODEL_ID=<local dir> — instead of transformers' minute of retries.
- **Device** (`choose_device`): DEVICE=auto takes the GPU when torch can use one. A GPU that was asked for, or
  that is plainly there (a CUDA build of torch and an NVIDIA driver) but that torch cannot use, stops the
  worker with the reason: a 12.8B model never goes to the CPU silently.
- **Fit** (`fit_refusal`): a model whose weights and one window of cache exceed the device's memory (GPU
  memory, or the RAM free on a CPU) is refused before loading, naming what would fit.

Pure functions of the facts they are given (torch's are gathered in `inference.model`), so each case is
tested without the hardware.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from inference.errors import DeviceUnavailable, ModelDoesNotFit, ModelNotFound
from inference.presets import DEMO_PRESET, GIB, OVERHEAD_BYTES, too_small, too_small_for_ram
from inference.settings import WorkerSettings

log = logging.getLogger(__name__)

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
# The least Linux driver each CUDA line of torch's wheels runs on (NVIDIA's CUDA toolkit release notes, table 3).
DRIVER_NEEDED = {
    "11.8": "520.61",
    "12.1": "530.30",
    "12.4": "550.54",
    "12.6": "560.28",
    "12.8": "570.26",
    "13.0": "580.65",
}
_STORED_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


# ------------------------------------------------------------------------------------------------ the device


@dataclass(frozen=True)
class Accelerator:
    """What this host's torch can do with GPUs."""

    cuda_build: str | None  # torch.version.cuda: None for a CPU-only build
    available: bool  # torch.cuda.is_available()
    driver_present: bool  # an NVIDIA driver is loaded (/proc/driver/nvidia/version)
    torch_version: str = ""
    driver: str | None = None  # the loaded driver's version, e.g. 535.104.05
    diagnosis: str = ""  # what torch itself said when it found no usable GPU


def nvidia_driver(proc: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The loaded NVIDIA kernel driver's version, or None."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", proc.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def _older(found: str, needed: str) -> bool:
    def parts(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split(".") if p.isdigit())

    return parts(found) < parts(needed)


def nvidia_driver_present(proc: Path = Path("/proc/driver/nvidia/version")) -> bool:
    return proc.exists()


def choose_device(requested: str, gpu: Accelerator) -> str:
    """The device to load on (`cuda` or `cpu`, or what DEVICE names), or DeviceUnavailable saying why not."""
    if gpu.available:
        return "cuda" if requested == "auto" else requested
    wants_gpu = requested.startswith("cuda")
    if not wants_gpu and requested != "auto":
        return requested  # DEVICE=cpu (or another torch device): asked for
    if not wants_gpu and not gpu.driver_present:
        return "cpu"  # auto, and no GPU here
    why = f"DEVICE={requested}" if wants_gpu else "an NVIDIA driver is loaded (a GPU host)"
    if gpu.cuda_build is None:
        raise DeviceUnavailable(
            f"{why}, but this torch ({gpu.torch_version or 'installed'}) is a CPU-only build: install its CUDA "
            "build (pip install torch from PyPI), or set DEVICE=cpu to run on the CPU"
        )
    needed = DRIVER_NEEDED.get(".".join(gpu.cuda_build.split(".")[:2]))
    if gpu.driver and needed and _older(gpu.driver, needed):
        cause = f"the NVIDIA driver {gpu.driver} is older than the {needed} its CUDA {gpu.cuda_build} build needs"
        fix = "update the driver, or build the worker for an older CUDA line (README, Requirements)"
    else:
        found = f"driver {gpu.driver}" if gpu.driver else "no driver loaded here"
        cause = f"torch (CUDA {gpu.cuda_build}) cannot use a GPU ({found}; torch says: {gpu.diagnosis or 'no GPU'})"
        fix = "check that a GPU is visible (CUDA_VISIBLE_DEVICES, the container's --gpus)"
    raise DeviceUnavailable(f"{why}, but {cause}: {fix}, or set DEVICE=cpu to run on the CPU anyway")


# ------------------------------------------------------------------------------------------------ the fit


def fit_refusal(
    settings: WorkerSettings, device: str, dtype: str, memory_bytes: int, device_name: str = ""
) -> str | None:
    """Why the model cannot fit `memory_bytes` (GPU memory, or RAM available on a CPU), or None when it can or
    its size is unknown (a Hub model that is not a preset)."""
    if settings.device_map:
        return None  # spread over several devices: each one's share is accelerate's business
    dtype_bytes = DTYPE_BYTES.get(dtype, 2)
    if settings.serves_preset:
        preset = settings.preset
        if device == "cpu":
            return too_small_for_ram(preset, dtype_bytes, memory_bytes, dtype)
        return too_small(preset, settings.quantization, memory_bytes, device_name or device)
    local = Path(settings.model_id).expanduser()
    if not local.is_dir() or settings.quantization != "none":
        return None
    weights = local_weight_bytes(local, dtype_bytes)
    if weights is None or weights + OVERHEAD_BYTES <= memory_bytes:
        return None
    where = "this machine has" if device == "cpu" else f"{device_name or device} has"
    room = "available" if device == "cpu" else "of GPU memory"
    return (
        f"MODEL_ID={settings.model_id} in {dtype} needs about {(weights + OVERHEAD_BYTES) / GIB:.0f} GiB for its "
        f"weights alone and {where} {memory_bytes / GIB:.0f} GiB {room}: use a smaller model"
        + (", DTYPE=bfloat16" if dtype_bytes > 2 else "")
        + (", or MODEL=demo" if device == "cpu" else ", QUANTIZATION=8bit or DEVICE_MAP=auto over several GPUs")
    )


def local_weight_bytes(directory: Path, dtype_bytes: int) -> int | None:
    """A local model's weights as loaded in `dtype_bytes` a parameter: its weight files' size, scaled from the
    dtype they are stored in (config.json's `dtype`, or `torch_dtype`; float32 when it says neither)."""
    files = [f for pattern in WEIGHT_FILES for f in directory.glob(pattern)]
    if not files:
        return None
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    stored = _STORED_BYTES.get(str(config.get("dtype") or config.get("torch_dtype") or "float32"), 4)
    return int(sum(f.stat().st_size for f in files) * dtype_bytes / stored)


def available_ram(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process may still use: MemAvailable, or less under a container's memory limit."""
    available: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        limit, used = (cgroup / "memory.max").read_text().strip(), (cgroup / "memory.current").read_text().strip()
        if limit != "max":
            room = int(limit) - int(used)
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def check_fit(settings: WorkerSettings, device: str, dtype: str, memory_bytes: int | None, name: str = "") -> None:
    """ModelDoesNotFit when `fit_refusal` says so; a CPU run of a real KULLM is said plainly in the log."""
    if memory_bytes is not None and (refusal := fit_refusal(settings, device, dtype, memory_bytes, name)):
        raise ModelDoesNotFit(refusal)
    if device == "cpu" and settings.serves_preset and settings.model != DEMO_PRESET:
        log.warning("no GPU: MODEL=%s runs on the CPU, which answers far too slowly for chat", settings.model)


# ------------------------------------------------------------------------------------------------ the source


def hub_unreachable(endpoint: str, timeout_s: float) -> str | None:
    """Why the Hub at `endpoint` cannot be reached within `timeout_s` (None: it answered). Any HTTP answer, even
    an error status, counts as reached; the request runs on a thread so that a hanging DNS lookup is bounded too."""
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(str(reason) or type(exc).__name__)

    probe = threading.Thread(target=ask, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout_s)
    if not outcome:
        return f"no answer in {timeout_s:g} s"
    return outcome[0]


def cached(settings: WorkerSettings) -> bool:
    """Whether MODEL_ID's config is in the Hugging Face cache (so it can load without the Hub)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(settings.model_id, "config.json", revision=settings.model_revision)
    return isinstance(found, str)


def model_source(settings: WorkerSettings) -> WorkerSettings:
    """The settings to load with: the demo model built, or HF_HUB_OFFLINE set when the Hub is unreachable and
    the cache holds the model; ModelNotFound in one line when the model cannot come from anywhere."""
    if settings.model == DEMO_PRESET and settings.serves_preset:
        from inference import demo

        target = Path(settings.model_id)
        if not demo.is_built(target):
            log.info("building the demo model in %s (about a minute on a CPU; once)", target)
        demo.build(target)
        log.warning("MODEL=demo: a tiny demo model that knows only a few answers (e.g. 「딥러닝이 뭐야?」)")
        return settings
    if Path(settings.model_id).expanduser().is_dir() or settings.model_id.startswith("random:"):
        return settings
    if settings.hf_hub_offline:
        if not cached(settings):
            raise ModelNotFound(_not_cached(settings, "HF_HUB_OFFLINE=1 is set"))
        return settings
    problem = hub_unreachable(settings.hf_endpoint, settings.hf_hub_timeout_s)
    if problem is None:
        return settings
    if cached(settings):
        log.warning(
            "the Hugging Face Hub (%s) is unreachable (%s): loading the cached copy", settings.hf_endpoint, problem
        )
        return settings.model_copy(update={"hf_hub_offline": True})
    raise ModelNotFound(
        _not_cached(settings, f"the Hugging Face Hub ({settings.hf_endpoint}) is unreachable ({problem})")
    )


def _not_cached(settings: WorkerSettings, why: str) -> str:
    return (
        f"{why} and MODEL_ID={settings.model_id} is not in the Hugging Face cache: run `kullm download` where the "
        "Hub can be reached (then HF_HUB_OFFLINE=1), or set MODEL_ID=<a local model directory>, or try MODEL=demo"
    )
