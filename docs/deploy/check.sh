#!/usr/bin/env bash
# docs/deploy/check.sh: check the packaging as far as a machine without a
# running systemd allows. Run from anywhere:
#   bash docs/deploy/check.sh
# 1. The root Dockerfile's Go toolchain stage: the same go build with the
#    same flags, and the result must be a static binary that runs. (The
#    image itself is built from that Dockerfile and run with podman by
#    integration/container_test.go.)
# 2. The systemd unit: systemd-analyze verify (skipped only when
#    systemd-analyze is not installed; unit errors fail).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "--- static build (flags from the Dockerfile's Go stage)"
# Instructions only: the header's comments show the same command by hand.
flags="$(grep -v '^#' Dockerfile | grep -o 'go build -trimpath -ldflags "[^"]*"' | head -1)"
[ -n "$flags" ] || { echo "no go build line in Dockerfile"; exit 1; }
VERSION=ci-check
CGO_ENABLED=0 eval "$flags -o '$tmp/mailgate' ./cmd/mailgate"
if ldd "$tmp/mailgate" >/dev/null 2>&1; then
  echo "binary is dynamically linked"; exit 1
fi
"$tmp/mailgate" version

echo "--- systemd unit"
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze not available; unit not verified"
  exit 0
fi
# verify wants ExecStart's binary to exist: point it at the one just built.
mkdir -p "$tmp/unit"
sed "s|/usr/local/bin/mailgate|$tmp/mailgate|" docs/deploy/mailgate.service >"$tmp/unit/mailgate.service"
out="$(systemd-analyze verify "$tmp/unit/mailgate.service" 2>&1)" || { echo "$out"; exit 1; }
# verify exits 0 on some warnings; treat any line about our unit as an error.
if grep -q 'mailgate.service' <<<"$out"; then echo "$out"; exit 1; fi
echo "${out:-unit OK}"
