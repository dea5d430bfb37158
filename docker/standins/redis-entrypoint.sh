#!/bin/sh
# What the official Redis image's docker-entrypoint.sh does, for the stand-in image (redis.Dockerfile).
set -e
# `docker run redis --appendonly yes`: options alone are options of redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
# As root with redis-server first: give /data to the redis user and run as that user.
if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$0" "$@"
fi
# Without a config file the official image turns protected mode off: other containers reach it over the network.
if [ "$1" = "redis-server" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
umask 0077
exec "$@"
