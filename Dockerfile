# syntax=docker/dockerfile:1
#
# baremetal-image-cache: the proxy binary on a distroless, non-root runtime.
#
#   DOCKER_BUILDKIT=1 docker build -t baremetal-image-cache:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The listeners keep their loopback defaults (127.0.0.1:8080 and 127.0.0.1:9464): as a
# sidecar the proxy shares the pod's network namespace with its clients, so nothing needs to
# reach it from outside. A deployment that must be reached from elsewhere (a shared service,
# a Prometheus scraping the pod) passes `--listen` / `--admin-listen` and says why; see
# deploy/kubernetes/. Secrets (`BAREMETAL_IMAGE_CACHE_REDIS`, `..._REDIS_GRANT_KEY`, the
# admin token file) are never baked in: they come from the environment and mounted files.
#
# The builder and the runtime must be the same Debian release (bookworm = Debian 12): the
# binary links glibc dynamically (libc, libm, libgcc_s; `.ci/check-deploy` checks that the
# binary needs nothing else and no newer glibc than bookworm's 2.36). Pin both images by
# digest in production (`FROM image:tag@sha256:...`).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what `cargo build --bin baremetal-image-cache` reads: the workspace manifests, the
# proxy's sources and the simulator crate (a workspace member, so its manifest must exist).
COPY Cargo.toml Cargo.lock ./
COPY crates/ crates/
COPY src/ src/
# The repository's release profile keeps line tables for profiling (`debug = 1`, a 90 MB
# binary); the image does without them (function names stay in backtraces).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
# The target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,id=baremetal-image-cache-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=baremetal-image-cache-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=baremetal-image-cache-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin baremetal-image-cache \
    && install -D -m 0755 target/release/baremetal-image-cache /out/baremetal-image-cache

# glibc, libgcc_s and CA certificates, no shell, no package manager; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="baremetal-image-cache" \
      org.opencontainers.image.description="Read-through caching proxy (sidecar) for the Yandex Cloud BareMetal API: Image.Get over REST and gRPC from an in-memory TTL cache, Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/baremetal-image-cache /usr/local/bin/baremetal-image-cache

# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
# For documentation only: proxy (REST, gRPC/h2c) and admin (metrics, health, purge). Both
# listen on 127.0.0.1 unless --listen / --admin-listen say otherwise.
EXPOSE 8080/tcp 9464/tcp
# SIGTERM drains in-flight requests for up to --shutdown-grace (30s by default): give
# `docker stop -t` / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/baremetal-image-cache"]
