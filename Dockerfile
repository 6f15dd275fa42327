# syntax=docker/dockerfile:1.7
#
# Lambda Microservice: one image with the service binary and the language
# runtimes it drives (Node.js, Python, Rust via rustc; WebAssembly runs
# in-process). See deploy/README.md for build arguments, sizes and the
# sandbox settings the container needs at run time.
#
#   DOCKER_BUILDKIT=1 docker build -t lambda-microservice:dev .
#   docker build --build-arg WITH_RUST=false -t lambda-microservice:slim .
#
# For reproducible production builds, pin both base images by digest, e.g.
#   --build-arg RUST_IMAGE=rust:1-bookworm@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest>

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
# Builder: compiles the service; also prepares the Rust toolchain and the
# crates Rust scripts link against, for the runtime stage to copy.
# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# true: ship rustc/cargo (+ gcc as the linker) so `rust-*` functions work
# (adds roughly 700-800 MB). false: a much smaller image whose /health
# reports the rust runtime as unavailable.
ARG WITH_RUST=true
# true: also install the wasm32-wasip1 standard library, so Rust scripts
# may ask for compile_options.target = "wasm32-wasip1" (about 30-60 MB).
ARG WITH_RUST_WASM_TARGET=true

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .

# The registry, git checkouts and target dir live in BuildKit cache mounts:
# a source change rebuilds only our crates, not the dependencies. The
# binary is copied out of the cache mount so the next stage can use it.
RUN --mount=type=cache,id=lambda-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=lambda-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=lambda-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p lambda-server \
    && install -D -m 0755 target/release/lambda-microservice /out/lambda-microservice

# The toolchain for Rust scripts: the real sysroot (rustc, cargo, std),
# without rustup's proxies, so it runs read-only and as any user. The
# crates scripts may use (serde_json and its dependencies, pinned by
# runtimes/rust/deps/Cargo.lock) are fetched now into a CARGO_HOME of
# their own: the service builds them once per pod with `cargo --offline`.
RUN mkdir -p /out/rust /out/cargo-home \
    && if [ "${WITH_RUST}" = "true" ]; then \
         if [ "${WITH_RUST_WASM_TARGET}" = "true" ]; then rustup target add wasm32-wasip1; fi \
         && cp -a "$(rustc --print sysroot)/." /out/rust/ \
         && rm -rf /out/rust/share/doc /out/rust/share/man \
         && CARGO_HOME=/out/cargo-home cargo fetch --locked \
              --manifest-path runtimes/rust/deps/Cargo.toml \
         && chmod -R a+rX /out/rust /out/cargo-home ; \
       fi

# ---------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

ARG WITH_RUST=true
ARG APP_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# nodejs (>= 18), python3 and bubblewrap are what the runtimes execute;
# tini is PID 1 (signal forwarding, zombie reaping); gcc + libc6-dev are
# the linker rustc needs, only with the Rust toolchain.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
         bubblewrap ca-certificates nodejs python3 tini \
    && if [ "${WITH_RUST}" = "true" ]; then \
         apt-get install -y --no-install-recommends gcc libc6-dev ; \
       fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${APP_UID}" lambda \
    && useradd --system --uid "${APP_UID}" --gid lambda \
         --home-dir /var/lib/lambda --no-create-home --shell /usr/sbin/nologin lambda \
    && install -d -o lambda -g lambda -m 0750 /var/lib/lambda

COPY --from=builder /out/rust /opt/rust
COPY --from=builder /out/cargo-home /opt/cargo-home
COPY --from=builder /out/lambda-microservice /usr/local/bin/lambda-microservice
COPY config/runtime_mappings.json /etc/lambda/runtime_mappings.json
COPY deploy/docker/healthcheck.py /usr/local/bin/lambda-healthcheck

# rustc and cargo from /opt/rust (empty when WITH_RUST=false: the service
# then reports rust as unavailable). CARGO_HOME is read-only: it only holds
# the pre-fetched crates; builds go under DATA_DIR.
ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/opt/cargo-home \
    CARGO_NET_OFFLINE=true \
    BIND_ADDR=0.0.0.0:8080 \
    DATA_DIR=/var/lib/lambda \
    RUNTIME_MAPPINGS_FILE=/etc/lambda/runtime_mappings.json \
    LOG_FORMAT=json \
    RUST_LOG="info,wasmtime_wasi=warn"

WORKDIR /var/lib/lambda
USER ${APP_UID}:${APP_UID}
EXPOSE 8080
VOLUME ["/var/lib/lambda"]

# Liveness-style check: healthy while the HTTP server answers at all. A 503
# from /health (database unreachable) is reported in the output but does
# not mark the container unhealthy; readiness is the orchestrator's job.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/local/bin/lambda-healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/lambda-microservice"]
CMD ["serve"]
