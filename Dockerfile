# studio-worker container image.
#
#   docker build -t studio-worker:local .
#   docker run --rm -e DATABASE_URL=postgres://studio_worker_login:...@db:5432/postgres \
#     studio-worker:local --config /app/config/example.toml run
#
# Two stages: the builder compiles a release binary (dependencies in their own cached layer);
# the runtime stage is debian-slim with ca-certificates, the binary, the demo job program and the
# example configuration, running as an unprivileged user. No credentials are baked in: pass
# DATABASE_URL (or STUDIO_DATABASE__URL / STUDIO_DATABASE__PASSWORD) at run time.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /build

# 1. Dependencies only: the real manifest and lockfile with placeholder sources. This layer is
#    rebuilt only when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The crate itself. `touch` makes the real sources newer than the placeholder build, so cargo
#    never mistakes the placeholder artifacts for up to date (COPY keeps the context's mtimes).
COPY build.rs ./
COPY migrations ./migrations
COPY src ./src
RUN touch build.rs src/main.rs src/lib.rs \
 && cargo build --release --locked --bin studio-worker \
 && cp target/release/studio-worker /usr/local/bin/studio-worker \
 && /usr/local/bin/studio-worker --version

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates for TLS to managed PostgreSQL (sslmode=verify-full) and https:// executors.
# /bin/sh (dash), bash (used by the health check), sed and coreutils (used by the demo job
# program) are part of the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 studio \
 && useradd --system --uid 10001 --gid studio --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin studio

WORKDIR /app
COPY --from=builder /usr/local/bin/studio-worker /usr/local/bin/studio-worker
# Owned by root and read-only for the runtime user; the example's `command = ["examples/render.sh"]`
# resolves against WORKDIR /app.
COPY --chmod=0755 examples/render.sh /app/examples/render.sh
COPY --chmod=0644 config/example.toml /app/config/example.toml

USER 10001:10001

# /healthz, /readyz, /metrics (http.listen defaults to 127.0.0.1:9090, which the health check
# below reaches; set STUDIO_HTTP__LISTEN=0.0.0.0:9090 to scrape from outside the container, as
# docker-compose.yml does).
EXPOSE 9090

# No HTTP client in the image: bash's /dev/tcp sends the request, and the first response line
# must carry status 200. The listener starts once the database answers and the schema is current.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/studio-worker"]
CMD ["run"]
