#!/usr/bin/env bash
# Install the Debian packages Thaw needs to build, test and benchmark.
# Idempotent: only missing packages are installed (apt-get update first).
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libjansson-dev libcurl4-openssl-dev libxxhash-dev liburing-dev libpcre2-dev libutf8proc-dev libzip-dev
  nginx-light fio python3 python3-venv python3-pip
  clang libclang-rt-14-dev bc
  postgresql libpq-dev libmicrohttpd-dev
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
