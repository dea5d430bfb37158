# The GPU worker: a CUDA build of PyTorch, the worker extra, the model cached in a volume.
FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime

WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    PIP_NO_CACHE_DIR=1

COPY pyproject.toml README.md ./
COPY chatbus chatbus
COPY inference inference
COPY bot bot
COPY kullm kullm
# torch is already in the base image and satisfies the extra's requirement.
RUN pip install ".[worker]"

EXPOSE 9400
CMD ["kullm", "worker"]
