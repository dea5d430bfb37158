# Stand-in for python:3.11.14-slim-bookworm where no image registry can be reached (`make compose-check`): Debian
# bookworm's own Python 3.11 (3.11.2, not 3.11.14) and pip, where the official image keeps them (/usr/local/bin),
# with pip allowed to install into it as the official image allows, and the build host's CA certificates.
# FROM: a `debootstrap --variant=minbase` root.
FROM kullm-standin/bookworm:12
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
# The build host's CA bundle (written here by the check): where a proxy re-signs TLS, pip reaches PyPI through it.
COPY docker/standins/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8
CMD ["python3"]
