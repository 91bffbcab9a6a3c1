# avatar-proxy: multi-stage build, non-root runtime, cache dir as a volume.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole crate (target/ and the cache are excluded by .dockerignore): manifests, config,
# migrations, fonts, sources, benches and examples all take part in resolving the package.
COPY . .
RUN cargo build --release --locked --bin avatar-proxy

FROM debian:bookworm-slim
# ca-certificates: HTTPS to upstreams; curl: the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/avatar-proxy avatar \
    && mkdir -p /var/lib/avatar-proxy/cache \
    && chown -R avatar /var/lib/avatar-proxy \
    && chmod 700 /var/lib/avatar-proxy/cache
COPY --from=build /src/target/release/avatar-proxy /usr/local/bin/avatar-proxy
USER avatar
# 0.0.0.0 is an address to bind, not one browsers can reach: the service refuses to start until
# AVATAR_PUBLIC_BASE_URL says where browsers find it, e.g.
#   docker run -e AVATAR_PUBLIC_BASE_URL=https://avatars.example.com -p 8080:8080 … avatar-proxy
ENV AVATAR_LISTEN=0.0.0.0:8080 \
    AVATAR_CACHE_DIR=/var/lib/avatar-proxy/cache \
    AVATAR_LOG_FORMAT=json
VOLUME ["/var/lib/avatar-proxy/cache"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/avatar-proxy"]
CMD ["serve"]
