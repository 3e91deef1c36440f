# The weir host and the example plugins, built in one stage and shipped in a slim image.
FROM rust:1.99.1-bookworm AS build
RUN rustup target add wasm32-wasip2 \
    && apt-get update \
    && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir \
    && for plugin in user-profile pii-mask filter; do \
         ./target/release/weir plugin build "plugins/$plugin" --plugins /out/plugin-registry; \
       done

FROM debian:bookworm-slim
# libssl3: the Kafka clients' TLS and SASL/SCRAM (librdkafka links the system OpenSSL).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /app weir
WORKDIR /app
COPY --from=build /src/target/release/weir /usr/local/bin/weir
# The example plugins live outside the watched folder: a mounted folder would hide them there.
# The entrypoint copies the missing ones into it.
COPY --from=build /out/plugin-registry /opt/weir/plugins
COPY scripts/docker-entrypoint /usr/local/bin/weir-entrypoint
COPY examples /app/examples
RUN mkdir -p /app/plugin-registry && chown -R weir /app
USER weir
# The admin token: WEIR_ADMIN_TOKEN when set, else this file, which the entrypoint fills with a
# random token on first start. `weir plugin rollback` and `weir tap` inside the container read
# it through the same variable.
ENV WEIR_ADMIN_TOKEN_FILE=/app/.weir/admin.token
ENTRYPOINT ["weir-entrypoint"]
CMD ["run", "examples/seed.toml"]
