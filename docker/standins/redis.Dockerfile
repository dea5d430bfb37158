# Stand-in for redis:7.4.2-alpine where no image registry can be reached (`make compose-check`): Debian bookworm's
# redis-server (7.0, not 7.4) behind an entrypoint that does what the official image's does — the redis user
# (uid 999), /data as the working directory, protected mode off, and root dropped when `redis-server` is the
# first argument. FROM: a `debootstrap --variant=minbase` root.
FROM kullm-standin/bookworm:12
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --home-dir /data redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools gosu \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
COPY docker/standins/redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
