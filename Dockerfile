# sidecar's container image. Build from the repository root:
#   docker build -t sidecar:dev .
# Run (config and secrets are mounted files; see deploy/README.md):
#   docker run --read-only -p 4180:4180 -v "$PWD/config.yaml:/etc/sidecar/config.yaml:ro" sidecar:dev
#
# Both stages start from the same pinned base, so the virtual environment built in the first one
# finds the very interpreter it was made with in the second. The build steps themselves live in
# deploy/docker/install.sh, which the test suite runs too.

# ---- builder: build the wheel and install it, pinned, into /opt/sidecar ---------------------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY sidecar/ sidecar/
COPY deploy/docker/install.sh deploy/docker/install.sh
RUN sh deploy/docker/install.sh /src /opt/sidecar

# ---- final: the interpreter and the venv, nothing else --------------------------------------------
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="sidecar" \
      org.opencontainers.image.description="Authentication sidecar proxy: OpenID Connect sign-in in front of apps that cannot change." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sidecar

COPY --from=builder /opt/sidecar /opt/sidecar

# Nothing is written at run time (bytecode was compiled at build time), so the root filesystem can
# be read-only; give /tmp an emptyDir or tmpfs if anything ever needs scratch space.
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIDECAR_HEALTHCHECK_URL=http://127.0.0.1:4180/oauth2/healthz

USER 10001:10001
EXPOSE 4180

# No curl in slim images: the standard library asks the liveness endpoint. Override
# SIDECAR_HEALTHCHECK_URL when the config listens elsewhere or uses another auth.prefix.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SIDECAR_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["sidecar"]
CMD ["run", "-c", "/etc/sidecar/config.yaml"]
