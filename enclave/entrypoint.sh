#!/bin/sh
# Cloister enclave entrypoint.
#
#   entrypoint.sh <server command...>
#
# 1. If started as root (the Nitro Enclave init runs the image's CMD as root), grant the
#    service group access to the TEE device and re-run itself as the unprivileged user with
#    no_new_privs. Nothing else runs as root.
# 2. Start the server command, which listens on the Unix socket $CLOISTER_SOCKET.
# 3. Once the socket exists, bridge vsock to it:
#      socat VSOCK-LISTEN:$CLOISTER_VSOCK_PORT,fork,reuseaddr UNIX-CONNECT:$CLOISTER_SOCKET
#    (Node cannot open AF_VSOCK sockets.) The parent's `cloister relay` connects to
#    <enclave-cid>:$CLOISTER_VSOCK_PORT.
# 4. If CLOISTER_EGRESS_VSOCK_PORT is set (not 0), first start the egress bridge, the enclave
#    end of the parent's `cloister relay --egress` (docs/KEYS.md): Unix socket to vsock,
#      socat UNIX-LISTEN:$CLOISTER_EGRESS_SOCKET,fork VSOCK-CONNECT:3:$CLOISTER_EGRESS_VSOCK_PORT
#    (CID 3 is the parent instance), and export CLOISTER_EGRESS=unix:$CLOISTER_EGRESS_SOCKET so
#    `cloister serve` reaches the key broker and AWS KMS through it. TLS runs end to end inside
#    the server; socat and the parent carry ciphertext.
# 5. If any of these processes exits, stop the others and exit with the first one's status.
#
# Set CLOISTER_VSOCK_PORT=0 to skip the bridge (SEV-SNP / TDX VMs, where the server listens
# on TCP itself or a local proxy fronts the socket).
set -eu

SOCK="${CLOISTER_SOCKET:-/run/cloister/cloister.sock}"
VSOCK_PORT="${CLOISTER_VSOCK_PORT:-5000}"
RUN_AS="${CLOISTER_USER:-cloister}"
WAIT_SECONDS="${CLOISTER_SOCKET_WAIT_SECONDS:-120}"
EGRESS_PORT="${CLOISTER_EGRESS_VSOCK_PORT:-0}"
EGRESS_SOCK="${CLOISTER_EGRESS_SOCKET:-/run/cloister/egress.sock}"

log() { echo "cloister-entrypoint: $*" >&2; }

if [ "$#" -eq 0 ]; then
  log "usage: entrypoint.sh <server command...>"
  exit 64
fi

case "$VSOCK_PORT" in
  ''|*[!0-9]*) log "CLOISTER_VSOCK_PORT must be a number"; exit 64 ;;
esac
case "$EGRESS_PORT" in
  ''|*[!0-9]*) log "CLOISTER_EGRESS_VSOCK_PORT must be a number"; exit 64 ;;
esac

if [ "$(id -u)" = "0" ]; then
  for dev in /dev/nsm /dev/sev-guest /dev/tdx_guest; do
    if [ -c "$dev" ]; then
      chgrp "$RUN_AS" "$dev"
      chmod g+rw "$dev"
    fi
  done
  install -d -o "$RUN_AS" -g "$RUN_AS" -m 0750 "$(dirname "$SOCK")"
  exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups --no-new-privs --inh-caps=-all -- "$0" "$@"
fi

rm -f "$SOCK"
egress=""
if [ "$EGRESS_PORT" != "0" ]; then
  rm -f "$EGRESS_SOCK"
  socat "UNIX-LISTEN:${EGRESS_SOCK},fork,mode=600" "VSOCK-CONNECT:3:${EGRESS_PORT}" &
  egress=$!
  CLOISTER_EGRESS="${CLOISTER_EGRESS:-unix:${EGRESS_SOCK}}"
  export CLOISTER_EGRESS
  log "egress: ${EGRESS_SOCK} to the parent's vsock port ${EGRESS_PORT}"
fi
"$@" &
server=$!
bridge=""

stop() {
  trap - TERM INT
  [ -n "$bridge" ] && kill -TERM "$bridge" 2>/dev/null || true
  [ -n "$egress" ] && kill -TERM "$egress" 2>/dev/null || true
  kill -TERM "$server" 2>/dev/null || true
}
trap 'stop' TERM INT

if [ "$VSOCK_PORT" != "0" ]; then
  waited=0
  while [ ! -S "$SOCK" ]; do
    if ! kill -0 "$server" 2>/dev/null; then
      wait "$server" || status=$?
      log "server exited before creating $SOCK"
      exit "${status:-1}"
    fi
    if [ "$waited" -ge "$((WAIT_SECONDS * 10))" ]; then
      log "server did not create $SOCK within ${WAIT_SECONDS}s"
      stop
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  socat "VSOCK-LISTEN:${VSOCK_PORT},fork,reuseaddr" "UNIX-CONNECT:${SOCK}" &
  bridge=$!
  log "bridging vsock port ${VSOCK_PORT} to ${SOCK}"
fi

# Wait for whichever exits first (POSIX sh has no `wait -n`: poll both).
while :; do
  if ! kill -0 "$server" 2>/dev/null; then
    status=0
    wait "$server" || status=$?
    log "server exited ($status)"
    stop
    exit "$status"
  fi
  if [ -n "$bridge" ] && ! kill -0 "$bridge" 2>/dev/null; then
    status=0
    wait "$bridge" || status=$?
    log "vsock bridge exited ($status)"
    stop
    wait "$server" 2>/dev/null || true
    exit 1
  fi
  if [ -n "$egress" ] && ! kill -0 "$egress" 2>/dev/null; then
    status=0
    wait "$egress" || status=$?
    log "egress bridge exited ($status)"
    stop
    wait "$server" 2>/dev/null || true
    exit 1
  fi
  sleep 1
done
