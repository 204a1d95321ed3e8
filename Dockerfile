# The relay, the `notice` daemon and the `keys` CLI in one image (docker-compose.yml).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY keys ./keys
COPY relay ./relay
COPY clients ./clients
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/cpar cpar \
    && mkdir -p /var/lib/cpar/relay /var/lib/cpar/daemon /net \
    && chown -R cpar:cpar /var/lib/cpar /net

USER cpar
WORKDIR /var/lib/cpar
CMD ["relay", "--help"]
