#!/usr/bin/env bash
# CI's image check (called by .ci/run before `npm test`; needs root, as CI runs):
#   1. installs the Debian packages it needs (buildah, mmdebstrap, cpio, libarchive-tools),
#   2. bootstraps the stand-in base image once (scripts/bootstrap-base.sh; cached in
#      /var/cache/cloister-ci between runs),
#   3. builds the demo model, then Dockerfile.enclave with buildah, an EIF from the image's
#      root filesystem with stand-in blobs (kernel, init, nsm.ko: small files; the EIF format
#      does not care), and starts the server from the image's root filesystem with the image's
#      CMD and entrypoint and gets a sealed answer from it over its Unix socket,
#   4. with CLOISTER_CI_REBUILD=1, builds a second time and compares image id, layer digests
#      and measurements (scripts/check-reproducible.sh).
# Exits non-zero on any failure: a broken Dockerfile fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${CLOISTER_CI_CACHE:-/var/cache/cloister-ci}"
mirror="${CLOISTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

need=()
for pair in buildah:buildah mmdebstrap:mmdebstrap cpio:cpio bsdtar:libarchive-tools; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "== apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap >/dev/null
fi

echo "== base image (stand-in for the pinned node:20-bookworm-slim)"
base="$(nice bash scripts/bootstrap-base.sh --cache "$cache/base" --mirror "$mirror")"
echo "base: $base"

echo "== demo model"
node scripts/make-demo-model.mjs >/dev/null

# Stand-in Nitro blobs: the real ones come with nitro-cli (/usr/share/nitro_enclaves/blobs).
blobs="$(mktemp -d)"
trap 'rm -rf "$blobs"' EXIT
head -c 65536 /dev/zero | tr '\0' 'K' > "$blobs/bzImage"
printf '#!stand-in init\n' > "$blobs/init"
printf 'stand-in nsm.ko\n' > "$blobs/nsm.ko"
printf 'reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on root=/dev/ram0\n' > "$blobs/cmdline"

build() { # out-dir
  nice node scripts/build-image.mjs --node-image "$base" --debian-mirror "$mirror" \
    --kernel "$blobs/bzImage" --init "$blobs/init" --nsm "$blobs/nsm.ko" --cmdline "$blobs/cmdline" \
    --out "$1" "${@:2}"
}

echo "== build the image, its EIF, and get a sealed answer from it"
start=$SECONDS
build build/image --check
echo "image build and check: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
# The EIF's own measurement agrees with the build's report.
node dist/cli/main.js eif measure build/image/cloister.eif

if [ "${CLOISTER_CI_REBUILD:-0}" = 1 ]; then
  echo "== second build from scratch: identical image and measurements?"
  build build/image-2
  bash scripts/check-reproducible.sh build/image build/image-2
fi

# Old untagged images from earlier runs would fill the disk; the base stays (it is tagged).
buildah rmi --prune >/dev/null 2>&1 || true
