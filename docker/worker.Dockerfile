# The GPU worker. PyPI's torch for Linux is its CUDA 13.0 build, which needs an NVIDIA driver >= 580 (the NVIDIA
# Container Toolkit brings the host's driver in); every version is the one `make test` runs, from
# constraints/lock.txt. TORCH_CHANNEL picks another build of the same torch version:
#   pypi (default: CUDA 13.0) | cu128 (driver >= 570) | cu126 (>= 560) | cpu  — from download.pytorch.org
#   local — the wheel placed in docker/wheels/ (a host that reaches neither, e.g. `make compose-check` here)
FROM python:3.11.14-slim-bookworm
ARG TORCH_CHANNEL=pypi

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface
RUN useradd --create-home --uid 10001 kullm \
    && mkdir -p /cache/huggingface /app/.kullm && chown kullm:kullm /cache/huggingface /app/.kullm
WORKDIR /app

# Dependencies first, from the lock: a change to the code does not reinstall them. torch first when its build
# comes from elsewhere (alone: its dependencies come with the rest, from PyPI and the lock); the lock's `torch==X`
# then holds, as a local label such as +cu128 or +cpu matches it.
COPY pyproject.toml constraints/lock.txt docker/requirements.py ./
COPY docker/wheels/ /tmp/wheels/
RUN torch="$(grep '^torch==' lock.txt)" \
    && case "$TORCH_CHANNEL" in \
         pypi) ;; \
         local) pip install --no-deps --no-index --find-links /tmp/wheels "$torch" ;; \
         cu126|cu128|cu130|cpu) pip install --no-deps --index-url "https://download.pytorch.org/whl/$TORCH_CHANNEL" "$torch" ;; \
         *) echo "TORCH_CHANNEL=$TORCH_CHANNEL: use pypi, cu126, cu128, cu130, cpu or local" >&2; exit 2 ;; \
       esac \
    && rm -rf /tmp/wheels \
    && python requirements.py worker quantization > requirements.txt \
    && pip install -c lock.txt -r requirements.txt

COPY README.md ./
COPY chatbus chatbus
COPY runtime runtime
COPY inference inference
COPY bot bot
COPY kullm kullm
# The build backend from the lock too (pip's isolated build would fetch the newest setuptools).
RUN pip install -c lock.txt setuptools && pip install --no-deps --no-build-isolation .

USER kullm
EXPOSE 9400
CMD ["kullm", "worker"]
