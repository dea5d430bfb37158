# The chat adapters, one image for both: slim Python, no torch. The compose service picks
# `kullm discord` or `kullm slack`; every version is from constraints/lock.txt.
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 kullm
WORKDIR /app

# Dependencies first, from the lock: a change to the code does not reinstall them.
COPY pyproject.toml constraints/lock.txt docker/requirements.py ./
RUN python requirements.py discord slack > requirements.txt \
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
CMD ["kullm", "discord"]
