# One Jisr node. Media flows over one UDP port (JISR_MEDIA_UDP_PORT, 7882; worker i
# of --workers N takes 7882+i): publish it (docker run -p 7882:7882/udp …) or use
# host networking, and set JISR_ICE_ADDRESSES to the address clients reach it on.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The layout of a machine of deploy/README.md: the checkout in /opt/jisr, its
# virtual environment in /opt/jisr/.venv (deploy/compose.yaml runs
# /opt/jisr/.venv/bin/jisr, as deploy/systemd/jisr.service does).
WORKDIR /opt/jisr
COPY pyproject.toml setup.py README.md ./
COPY signaling ./signaling
COPY media ./media
COPY recordings ./recordings
COPY web ./web
# gcc builds the media path's C part (media/_wire.c), then goes.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && python -m venv /opt/jisr/.venv \
 && /opt/jisr/.venv/bin/pip install --no-cache-dir . \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent jisr
ENV PATH=/opt/jisr/.venv/bin:$PATH

ENV JISR_HOST=0.0.0.0 JISR_PORT=8080 JISR_WEB_DIR=/opt/jisr/web
USER jisr
EXPOSE 8080 7882/udp
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://{os.environ[\"JISR_HOST\"]}:{os.environ[\"JISR_PORT\"]}/healthz')"
CMD ["jisr", "serve"]
