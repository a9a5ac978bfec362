# Redis, Sentinel, coturn and Caddy for compose.yaml: Debian's own packages, as the
# systemd deployment installs them, so the services run the same programs from
# the same paths, as the same users, as Debian's units do. Fixed user ids for the
# two that read files from the host: redis 6379 (deploy/redis/ is writable by it:
# Sentinel and CONFIG REWRITE rewrite their files) and turnserver 3478 (the TURN
# certificate's key). tests/unit/test_deploy_files.py checks that each command of
# compose.yaml comes from a package installed here.
FROM debian:bookworm-slim

RUN groupadd --system --gid 6379 redis \
 && useradd --system --uid 6379 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && groupadd --system --gid 3478 turnserver \
 && useradd --system --uid 3478 --gid turnserver --home-dir / --shell /bin/false turnserver \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      redis-server redis-sentinel coturn caddy ca-certificates libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/bin/caddy \
 && install -d -o turnserver -g turnserver /run/coturn /var/log/coturn /var/lib/coturn \
 && install -d -o redis -g redis /run/redis /run/sentinel \
 && rm -rf /var/lib/apt/lists/*
