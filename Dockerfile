# syntax=docker/dockerfile:1
# dcr-gateway image: `docker build -t dcr-gateway:$(git describe --tags --always) .`
# Two stages: `build` turns the source into wheels (the gateway's and its dependencies'), `runtime`
# installs them offline from those wheels into a clean slim Python. No compiler, no source tree, no
# wheel cache, no pip in the final image. tests/helm/test_dockerfile.py checks these rules.

# Pin by digest in your pipeline (python:3.11-slim@sha256:…) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: wheels only -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
# The gateway's wheel and wheels for every dependency, with the `speed` extra (uvloop). Every
# dependency publishes manylinux wheels for amd64 and arm64; on a platform without them, install
# build-essential in this stage only.
RUN pip wheel --wheel-dir /wheels ".[speed]"

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Install from the build stage's wheels only (--no-index: nothing fetched, nothing compiled); the
# wheels are bind-mounted, so they never become a layer. Then pip, setuptools and wheel go: nothing
# installs packages at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "dcr-gateway[speed]" \
 && pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 dcr \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dcr

# The shipped policies, the default when nothing is mounted over /etc/dcr-gateway/policies (the Helm
# chart mounts a ConfigMap there).
COPY policies/ /etc/dcr-gateway/policies/
# A container default config: listeners on all interfaces, JSON logs, the shipped policies, trust
# anchors pointing at the in-process sandbox (DCRGW_SANDBOX__ENABLED=true for a demo). Production
# mounts its own config (the Helm chart does) or overrides keys with DCRGW_<SECTION>__<KEY>.
COPY <<'EOF' /etc/dcr-gateway/config.yaml
server:
  public: {host: 0.0.0.0, port: 8080}
  admin: {host: 0.0.0.0, port: 9090}
  public_url: http://127.0.0.1:8080
logging: {format: json, level: info}
policies: {dir: /etc/dcr-gateway/policies}
upstream: {url: "http://127.0.0.1:8081"}
trust:
  token_issuers:
    bank: {issuer: "http://127.0.0.1:8080", jwks_uri: "http://127.0.0.1:8081/jwks", token_types: [at+jwt]}
sandbox:
  enabled: false
  listen: {host: 127.0.0.1, port: 8081}
  state_dir: /tmp/dcr-gateway-sandbox
EOF

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="dcr-gateway" \
      org.opencontainers.image.description="Policy-enforcing gateway for UK Open Banking Dynamic Client Registration" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric, so Kubernetes can verify runAsNonRoot; the chart's securityContext uses the same ids.
USER 10001:10001
WORKDIR /tmp
# 8080: public (TPP-facing) listener; 9090: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
# SIGTERM: /readyz turns 503, in-flight requests drain, exit 0 (config `shutdown`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["dcr-gateway"]
CMD ["serve", "--config", "/etc/dcr-gateway/config.yaml"]
