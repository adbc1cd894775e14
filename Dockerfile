# The nubis binary in a small image, for docker-compose.yml (controller and agents) or your own
# orchestration. Two stages: a Rust build, then a slim Debian with the binary alone.
#
#   docker build -t nubis/nubis:local .
#
# The function runtimes are separate images (nubis/runtime-*), built on the Docker host that
# runs the agents with `bash scripts/build-images.sh`; this image does not contain them.

# Any stable Rust new enough for edition 2024 and the crate's dependencies (the project builds
# with 1.95).
FROM rust:1-bookworm AS build
# etcd-client compiles etcd's protobuf definitions at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, against stub sources, so a source change does not rebuild every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > bench/async_throughput.rs \
 && cargo build --release --locked --bin nubis \
 && rm -rf src bench
COPY src src
COPY migrations migrations
COPY bench bench
# COPY keeps the context's mtimes, which may be older than the stubs': touch so cargo rebuilds.
RUN find src bench -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin nubis \
 && strip target/release/nubis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10000 --user-group --home-dir /var/lib/nubis --shell /usr/sbin/nologin nubis \
 && install -d -o nubis -g nubis -m 0750 /var/lib/nubis
COPY --from=build /src/target/release/nubis /usr/local/bin/nubis
# Agents need the Docker socket: run them as root (docker-compose.yml does), or give this user
# the socket's group. Controllers need nothing of the host.
USER nubis
WORKDIR /var/lib/nubis
ENV NUBIS_DATA_DIR=/var/lib/nubis RUST_LOG=info
# 9000: the public API; 9100: an agent's internal listener.
EXPOSE 9000 9100
# nubis handles SIGTERM itself (graceful drain), also as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nubis"]
CMD ["server", "--listen", "0.0.0.0:9000"]
