# kproxy's container image: `docker build -t <registry>/kproxy:<tag> .` from the repository root.
# Two stages: build on Debian bookworm, run on bookworm-slim with only the shared libraries
# the binary links (crates/kproxy/tests/manifests.rs checks them against `ldd`), CA
# certificates and iptables.

# Build: libnftnl and libmnl headers, found with pkg-config (nftnl-sys, mnl-sys).
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnftnl-dev libmnl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kproxy \
    && install -m 0755 target/release/kproxy /usr/local/bin/kproxy

# Run: the shared libraries the binary links (libc and libgcc are in the base image), CA
# certificates for API servers outside the cluster's own CA, and iptables (iptables-restore
# and its lock) for the iptables mode, which is being built (manifests/overlays/iptables).
# No nft binary: kproxy speaks netlink itself. crates/kproxy/tests/manifests.rs holds this
# list to `ldd` plus those two.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnftnl11 libmnl0 ca-certificates iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/kproxy /usr/local/bin/kproxy
ENTRYPOINT ["/usr/local/bin/kproxy"]
