# Confab: the same binary the README builds (`cargo build --release`, default features),
# in a small runtime image.
#   docker build -t confab .
#   docker run -p 3000:3000 -e JWT_SECRET=... confab

FROM rust:1-bookworm AS build
WORKDIR /src
# Everything the workspace build needs; .dockerignore keeps target/, data/ and the rest out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/confab /usr/local/bin/confab

FROM debian:bookworm-slim
# CA certificates for mongodb+srv:// / TLS connections; nothing else is needed at run time
# (SQLite is bundled, the health check is `confab health`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin confab \
    && mkdir -p /app/data \
    && chown confab:confab /app/data
WORKDIR /app
COPY --from=build /usr/local/bin/confab /usr/local/bin/confab
# config/default.toml and the profiles are read relative to the working directory.
COPY config/ /app/config/
USER confab
ENV CONFAB_PROFILE=production
EXPOSE 3000
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["confab", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["confab"]
CMD ["serve"]
