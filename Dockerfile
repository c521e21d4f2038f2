# syntax=docker/dockerfile:1
# fluxadmit: a static binary in an empty image. Built for amd64 and arm64 by
# .github/workflows/release.yaml; scripts/image.sh builds the same image here without a
# registry (from a binary built on the host).

# Build stage: the Rust toolchain this crate is tested with (Cargo.lock pins every crate).
FROM docker.io/library/rust:1.95.0-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY core ./core
COPY bench ./bench
COPY policies ./policies
# glibc linked statically (crt-static): the binary needs no loader and no shared library,
# so it runs FROM scratch. The target is named so that build scripts and proc-macros (host
# code) are still linked dynamically.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" -p fluxadmit --bin fluxadmit \
 && strip --strip-all -o /fluxadmit "target/$target/release/fluxadmit"

# Runtime: nothing but the binary and a CA bundle (for the Kubernetes API client when the
# cluster's CA is not mounted, and for cert-manager-less setups that talk to the API server).
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/fluxadmit/fluxadmit
LABEL org.opencontainers.image.title="fluxadmit" \
      org.opencontainers.image.description="Admission webhook enforcing deployment policy on Flux CD clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /fluxadmit /fluxadmit
# The chart's pod runs as this user, with a read-only root filesystem: fluxadmit writes
# nothing at run time (certificates and policies are mounted read-only).
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/fluxadmit"]
CMD ["serve"]
