# RabbitMQ from Debian's package, standing in for rabbitmq:3.13.7-alpine (deploy/compose-check
# only): the entrypoint honours the official image's RABBITMQ_DEFAULT_USER/_PASS/_VHOST.
ARG BASE
FROM ${BASE}
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/rabbitmq && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
COPY rabbitmq-entrypoint /usr/local/bin/
ENTRYPOINT ["rabbitmq-entrypoint"]
CMD ["rabbitmq-server"]
