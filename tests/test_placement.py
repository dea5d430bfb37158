"""Where the model runs and where it comes from, decided before loading: the device, the fit, the Hub, and the
settings a first run gets wrong (`inference.placement`, `chatbus.config`). Pure functions of the facts given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatbus.config import RedisRecord, settings_problem
from inference import placement
from inference.errors import DeviceUnavailable, ModelNotFound
from inference.placement import Accelerator, choose_device, fit_refusal, local_weight_bytes, model_source
from inference.presets import GIB, PRESETS, too_small_for_ram
from inference.settings import WorkerSettings
from testkit.settings import settings_of

CPU_ONLY = Accelerator(cuda_build=None, available=False, driver_present=False, torch_version="2.13.0+cpu")
OLD_DRIVER = Accelerator(
    cuda_build="13.0", available=False, driver_present=True, torch_version="2.13.0", driver="535.104.05"
)
GPU = Accelerator(cuda_build="12.8", available=True, driver_present=True)


def settings(tmp_path: Path, **values: object) -> WorkerSettings:
    return settings_of(WorkerSettings, **values)


def test_a_gpu_is_never_left_for_the_cpu_silently() -> None:
    assert choose_device("auto", GPU) == "cuda" and choose_device("cuda:1", GPU) == "cuda:1"
    assert choose_device("auto", CPU_ONLY) == "cpu" and choose_device("cpu", OLD_DRIVER) == "cpu"
    with pytest.raises(DeviceUnavailable, match=r"DEVICE=cuda, but this torch \(2.13.0\+cpu\) is a CPU-only build"):
        choose_device("cuda", CPU_ONLY)
    with pytest.raises(DeviceUnavailable) as old:
        choose_device("auto", OLD_DRIVER)  # the case that sent 12.8B to the CPU without a word
    assert "the NVIDIA driver 535.104.05 is older than the 580.65 its CUDA 13.0 build needs" in str(old.value)
    assert "DEVICE=cpu" in str(old.value)
    hidden = Accelerator(cuda_build="12.8", available=False, driver_present=True, driver="570.86", diagnosis="no GPU")
    said = r"cannot use a GPU \(driver 570\.86; torch says: no GPU\).*CUDA_VISIBLE"
    with pytest.raises(DeviceUnavailable, match=said):
        choose_device("auto", hidden)
    gpu_host_cpu_torch = Accelerator(cuda_build=None, available=False, driver_present=True)
    with pytest.raises(DeviceUnavailable, match="CPU-only build"):
        choose_device("auto", gpu_host_cpu_torch)


def test_the_driver_version_is_read_from_the_kernel_module(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n")
    assert placement.nvidia_driver(proc) == "535.104.05"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert placement.nvidia_driver(proc) == "580.65.06"
    assert placement.nvidia_driver(tmp_path / "absent") is None


def test_a_model_too_big_for_the_ram_is_refused_naming_what_fits() -> None:
    v1 = PRESETS["kullm-v1"]
    refusal = too_small_for_ram(v1, 4, 22 * GIB, "float32")
    assert refusal is not None and "needs about 53 GiB" in refusal and "has 22 GiB available" in refusal
    assert "MODEL=kullm-v2-5.8b DTYPE=bfloat16" in refusal and "MODEL=demo" in refusal
    assert too_small_for_ram(v1, 2, 64 * GIB, "bfloat16") is None
    assert "DTYPE=bfloat16 (" in (too_small_for_ram(v1, 4, 40 * GIB, "float32") or "")
    assert too_small_for_ram(PRESETS["demo"], 4, 2 * GIB, "float32") is None


def test_a_local_model_is_measured_by_its_weight_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    assert local_weight_bytes(tmp_path, 4) == 8192, "stored in fp16, loaded in fp32: twice the files"
    local = settings(tmp_path, model_id=str(tmp_path))
    refusal = fit_refusal(local, "cpu", "float32", 1024)
    assert refusal is not None and f"MODEL_ID={tmp_path} in float32 needs about" in refusal and "MODEL=demo" in refusal
    assert fit_refusal(local, "cpu", "float32", 64 * GIB) is None
    assert fit_refusal(settings(tmp_path, model_id="someone/unknown"), "cpu", "float32", 1) is None, "size unknown"


def test_an_unreachable_hub_uses_the_cache_or_says_every_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "hub_unreachable", lambda endpoint, timeout_s: "Connection refused")
    monkeypatch.setattr(placement, "cached", lambda _: True)
    chosen = model_source(settings(tmp_path, model="kullm-v2-5.8b"))
    assert chosen.hf_hub_offline, "the cached copy, without asking the Hub again"
    monkeypatch.setattr(placement, "cached", lambda _: False)
    with pytest.raises(ModelNotFound) as refused:
        model_source(settings(tmp_path, model="kullm-v2-5.8b"))
    message = str(refused.value)
    assert "\n" not in message and "unreachable (Connection refused)" in message
    assert (
        "kullm download" in message
        and "HF_HUB_OFFLINE=1" in message
        and "MODEL_ID=<a local model directory>" in message
    )
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE=1 is set"):
        model_source(settings(tmp_path, model="kullm-v2-5.8b", hf_hub_offline=True))


def test_first_run_settings_are_forgiving_where_they_can_be_and_one_line_where_not(tmp_path: Path) -> None:
    assert (
        settings(tmp_path, model="KULLM3").model == "kullm3"
        and settings(tmp_path, model=" Kullm-V2 ").model == "kullm-v2"
    )
    demo = settings(tmp_path, model="demo")
    assert demo.serves_preset and not demo.do_sample, "the demo answers exactly only when decoded greedily"
    for bad, says in [
        ({"model": "kullm4"}, "invalid setting MODEL: 'kullm4' is not a preset: use one of kullm-v1, kullm-v2,"),
        ({"model_id": "/nonexistent/dir"}, "invalid setting MODEL_ID: no such directory: /nonexistent/dir"),
        ({"redis_url": "notaurl"}, "invalid setting REDIS_URL: must start with redis://, rediss:// or unix://"),
    ]:
        with pytest.raises(ValidationError) as refused:
            settings(tmp_path, **bad)
        problem = settings_problem(refused.value)
        assert problem.startswith(says) and "\n" not in problem and "pydantic.dev" not in problem


def test_clients_read_kullm_ups_record_only_without_redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert "the default: REDIS_URL is unset" in settings(tmp_path).redis_said
    RedisRecord(41234, str(tmp_path)).write(tmp_path / ".kullm")
    found = settings(tmp_path)
    assert found.redis_url == "redis://127.0.0.1:41234/0" and found.redis_from_kullm_up
    assert "redis_url" not in found.model_fields_set, "kullm up still sees REDIS_URL unset"
    given = settings(tmp_path, redis_url="redis://elsewhere:6379/0")
    assert given.redis_url == "redis://elsewhere:6379/0" and given.redis_said.endswith("(REDIS_URL)")
    (tmp_path / ".kullm" / "redis.json").write_text("{half a reco")
    assert settings(tmp_path).redis_url == "redis://localhost:6379/0", "a record that cannot be read is not trusted"
