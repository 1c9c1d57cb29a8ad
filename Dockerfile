# syntax=docker/dockerfile:1
#
# The crm-api server: a release build in a Rust image, run from a small Debian image as
# a non-root user. Dependencies are compiled in their own cached layer with cargo-chef,
# so a change to our sources rebuilds only our crates.
#
#   docker build -t mini-crm .          (or: cargo xtask docker-build)
#   docker run -p 8000:8000 -v crm-data:/data -e CRM_ADMIN_TOKEN=… mini-crm
#   docker run --rm -v crm-data:/data mini-crm migrate status
#
# By default it serves the SQLite file /data/crm.db (mount a volume there); set
# CRM_DATABASE_URL=postgres://… to use PostgreSQL. compose.yaml runs both setups.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- tools: the pinned toolchain (rust-toolchain.toml) and cargo-chef ---------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
WORKDIR /src
COPY rust-toolchain.toml ./
# Installs the toolchain the file pins (a no-op when the image already has it), so the
# build never uses another compiler than CI.
RUN rustup toolchain install && cargo --version
RUN cargo install cargo-chef --locked --version 0.1.78

# --- planner: the recipe is the manifests and Cargo.lock, nothing else -------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies first (cached while the recipe is unchanged), then us ----
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p crm-api --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p crm-api \
    && install -D -m 0755 target/release/crm-api /out/crm-api

# --- runtime ------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# curl for the health check, ca-certificates for any TLS peer. Unpinned on purpose: the
# stable release's packages only get security fixes, which a rebuild should pick up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged uid that owns the data directory; a fresh named volume mounted
# on /data inherits that ownership.
RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin crm \
    && mkdir /data \
    && chown crm:crm /data
COPY --from=builder /out/crm-api /usr/local/bin/crm-api

ENV CRM_DATABASE_URL="sqlite:///data/crm.db?mode=rwc" \
    CRM_BIND="0.0.0.0:8000"
# Numeric, so orchestrators can check that it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8000
# Shell form for `|| exit 1`: Docker reads exit status 1 as unhealthy (curl's own
# statuses, e.g. 22 or 7, are not in Docker's contract).
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
# SIGTERM makes the server stop accepting, finish requests and commit queued writes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["crm-api"]
CMD ["serve"]
