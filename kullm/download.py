"""`kullm download`: fetch the model into the Hugging Face cache before the first question needs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Weights for other frameworks: never needed by the worker.
IGNORED = ["*.msgpack", "*.h5", "*.ot", "flax_model*", "tf_model*"]


def main(model: str | None = None) -> int:
    """Download MODEL_ID (or `model`) with progress bars; returns the exit status."""
    from inference.placement import hub_unreachable, model_source
    from inference.presets import DEMO_PRESET
    from inference.settings import WorkerSettings

    settings = WorkerSettings()
    repo = model or settings.model_id
    if model is None and settings.model == DEMO_PRESET:
        model_source(settings)  # builds it
        print(f"MODEL=demo is built here, not downloaded: ready at {repo}.")
        return 0
    if Path(repo).is_dir():
        print(f"{repo} is a local directory: nothing to download.")
        return 0
    if not settings.hf_hub_offline and (problem := hub_unreachable(settings.hf_endpoint, settings.hf_hub_timeout_s)):
        print(
            f"cannot reach the Hugging Face Hub ({settings.hf_endpoint}: {problem}): download where it can be "
            "reached and copy the cache (or a model directory, then MODEL_ID=<that directory>), or set HF_ENDPOINT "
            "to a mirror.",
            file=sys.stderr,
        )
        return 1
    if settings.hf_hub_offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub when it is imported
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    size = f" (about {settings.preset.weight_bytes() / 1e9:.0f} GB)" if repo == settings.preset.model_id else ""
    print(f"downloading {repo} into the Hugging Face cache{size}…", file=sys.stderr)
    try:
        path = snapshot_download(repo_id=repo, revision=settings.model_revision, token=token, ignore_patterns=IGNORED)
    except LocalEntryNotFoundError:
        print(
            f"{repo} is not in the cache and HF_HUB_OFFLINE is set: run this once with network access "
            "(HF_HUB_OFFLINE=0).",
            file=sys.stderr,
        )
        return 1
    except HfHubHTTPError as exc:
        print(f"could not download {repo}: {exc}. Check MODEL_ID, network access and HF_TOKEN.", file=sys.stderr)
        return 1
    print(f"{repo} is ready at {path}. Workers can now start with HF_HUB_OFFLINE=1.")
    return 0
