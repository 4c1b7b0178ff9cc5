# Multi-stage build of a small colloquy image.
#   docker build -t colloquy .
#   docker run -e DATABASE_URL=postgres://user:pass@db:5432/colloquy -e ADMIN_TOKEN=... \
#              -e BIND=0.0.0.0:8080 -p 8080:8080 colloquy
# Migrations run at start (`colloquy serve` applies sql/ before listening).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY src ./src
COPY sql ./sql
# The operator console, embedded in the binary (src/http/console.rs).
COPY console ./console
RUN cargo build --release --locked --bin colloquy

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home colloquy
COPY --from=build /src/target/release/colloquy /usr/local/bin/colloquy
USER colloquy
ENV BIND=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/colloquy"]
CMD ["serve"]
