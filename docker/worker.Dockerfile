# The GPU worker. PyPI's torch for Linux is its CUDA build (the NVIDIA Container Toolkit brings the driver);
# every version is the one `make test` runs, from constraints/lock.txt.
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface
RUN useradd --create-home --uid 10001 kullm \
    && mkdir -p /cache/huggingface && chown kullm:kullm /cache/huggingface
WORKDIR /app

# Dependencies first, from the lock: a change to the code does not reinstall them.
COPY pyproject.toml constraints/lock.txt docker/requirements.py ./
RUN python requirements.py worker quantization > requirements.txt \
    && pip install -c lock.txt -r requirements.txt

COPY README.md ./
COPY chatbus chatbus
COPY inference inference
COPY bot bot
COPY kullm kullm
RUN pip install --no-deps .

USER kullm
EXPOSE 9400
CMD ["kullm", "worker"]
