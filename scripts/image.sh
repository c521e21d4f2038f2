#!/usr/bin/env bash
# Builds the fluxadmit container image here, with no registry: the binary is built on this
# machine, linked statically (glibc crt-static), and put FROM scratch with the host's CA
# bundle by buildah (chroot isolation, vfs storage: works as root without a daemon). The
# runtime stage is taken from ./Dockerfile, so both images carry the same user, entrypoint
# and labels; only where the binary and the CA bundle come from differs.
#
#   scripts/image.sh [TAG]          build (default tag localhost/fluxadmit:<crate version>)
#   scripts/image.sh --check [TAG]  build, then run the binary inside the image as uid 65532
#
# Needs: cargo, buildah (Debian package `buildah`).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
if [[ "${1:-}" == "--check" ]]; then
    check=true
    shift
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="${1:-localhost/fluxadmit:${version}}"
storage=(--storage-driver vfs)

triple="$(rustc -vV | sed -n 's/^host: //p')"
echo "== static build (${triple}, release)"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" -p fluxadmit --bin fluxadmit
bin="target/${triple}/release/fluxadmit"
if readelf -l "$bin" | grep -q 'INTERP'; then
    echo "error: $bin asks for a dynamic loader; the image has none" >&2
    exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
# The image carries no debug information (the release profile keeps line tables for
# profiling on a developer's machine).
strip --strip-all -o "$ctx/fluxadmit" "$bin"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
# The Dockerfile's last stage, with its two COPY --from=build lines reading the context.
awk '/^FROM scratch/ {on = 1} on' Dockerfile \
    | sed -e 's#^COPY --from=build /etc/ssl/certs/ca-certificates.crt #COPY ca-certificates.crt #' \
          -e 's#^COPY --from=build /fluxadmit #COPY fluxadmit #' >"$ctx/Containerfile"
if grep -q -- '--from=' "$ctx/Containerfile"; then
    echo "error: the Dockerfile's runtime stage copies something this script does not provide" >&2
    exit 1
fi

echo "== buildah bud ${tag}"
buildah "${storage[@]}" bud --isolation chroot --layers=false \
    --build-arg "VERSION=${version}" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -f "$ctx/Containerfile" -t "$tag" "$ctx"

if $check; then
    echo "== check: the image's config and its binary, run as uid 65532"
    config="$(buildah "${storage[@]}" inspect --type image --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}' "$tag")"
    [[ "$config" == '65532:65532 [/fluxadmit]' ]] || { echo "error: image config: $config" >&2; exit 1; }
    ctr="$(buildah "${storage[@]}" from "$tag")"
    mnt="$(buildah "${storage[@]}" mount "$ctr")"
    status=0
    (
        set -e
        # The example state and review, copied where the pod user can read them (the
        # checkout itself may be in a private directory).
        work="$(mktemp -d)"
        cp -r examples/state "$work/state"
        cp examples/reviews/helmrelease-cycle.json "$work/cycle.json"
        chmod -R a+rX "$work"
        chmod 0555 "$work"
        cd "$work"
        # The binary from the image's filesystem, as the pod user, from a read-only directory,
        # with the built-in policies: the cycle review is denied.
        out="$(setpriv --reuid 65532 --regid 65532 --clear-groups \
            "$mnt/fluxadmit" review --state state cycle.json || true)"
        echo "$out" | grep -q '"allowed":false' || { echo "error: unexpected answer: $out" >&2; exit 1; }
        "$mnt/fluxadmit" --version
    ) || status=$?
    buildah "${storage[@]}" umount "$ctr" >/dev/null
    buildah "${storage[@]}" rm "$ctr" >/dev/null
    [[ $status == 0 ]] || exit "$status"
    echo "image ${tag}: ok"
fi
echo "$tag"
