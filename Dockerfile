# Caching proxy for Tesla Powerwall gateways.
#   docker build -t pwproxy .
#   docker run -d --restart unless-stopped -p 8675:8675 \
#     -e PW_HOST=192.168.91.1 -e PW_GW_PWD=... -v pwproxy:/app/data pwproxy

# Build stage: compilers are only needed where a dependency has no wheel (e.g. 32-bit ARM).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libffi-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# Runtime: Debian slim (glibc: Tesla's cloud rejects musl's TLS fingerprint), tini as PID 1,
# tzdata for the history's local days (PW_TIMEZONE).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pwproxy \
 && mkdir -p /app/data && chown pwproxy /app/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY proxy/ /app/proxy/
COPY web/ /app/web/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PW_PORT=8675 \
    PW_AUTH_PATH=/app/data
USER pwproxy
EXPOSE 8675
# Follows PW_PORT and PW_HTTPS; 200 only when the gateway is really answering.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python3", "-m", "proxy.healthcheck"]
ENTRYPOINT ["tini", "--"]
CMD ["python3", "-m", "proxy"]
