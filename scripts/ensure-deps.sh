#!/usr/bin/env bash
# Installs what the tests and the demo need and starts a Docker engine if none answers.
# Safe to run again: it only installs what is missing and only starts what is not running.
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: installing packages and starting dockerd needs root (or run the steps in docs/development.md by hand)" >&2
    exit 1
  fi
}

packages=(postgresql-15 docker.io docker-compose busybox-static zstd git chromium shellcheck sudo nginx-light)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A local S3 endpoint for the offsite-backup tests (moto's server, in its own venv).
MOTO=/opt/stablehand-moto
if [[ ! -x $MOTO/bin/moto_server ]]; then
  need_root
  log "installing moto (a local S3 endpoint for the tests) into $MOTO"
  python3 -m venv "$MOTO"
  "$MOTO/bin/pip" install -q 'moto[server]'
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "adding rustup component $c"
    rustup component add "$c"
  fi
done

if ! docker info >/dev/null 2>&1; then
  need_root
  log "starting a Docker engine (no bridge network: test stacks use network_mode: host)"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >/var/log/stablehand-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start; see /var/log/stablehand-dockerd.log" >&2; exit 1; }
fi
log "dependencies ready"
