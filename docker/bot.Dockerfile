# The chat adapters: slim Python, no torch. The compose service picks `kullm discord` or `kullm slack`.
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

COPY pyproject.toml README.md ./
COPY chatbus chatbus
COPY inference inference
COPY bot bot
COPY kullm kullm
RUN pip install ".[discord,slack]"

CMD ["kullm", "discord"]
