# Redis from Debian's package, standing in for redis:7.4.2-alpine (deploy/compose-check only).
ARG BASE
FROM ${BASE}
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint /usr/local/bin/
WORKDIR /data
USER redis
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]
