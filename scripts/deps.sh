#!/usr/bin/env bash
# Installs the Debian packages ketch needs to build and test. Idempotent:
# it runs apt-get only when something is missing.
set -euo pipefail

PKGS=(
  build-essential pkg-config make gcc
  libuv1-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler          # protoc: tests generate Python stubs for ketch.proto and v3lock/election
  libssl-dev liblmdb-dev libraft-dev libjansson-dev
  libcmocka-dev
  clang libclang-rt-14-dev   # make fuzz: libFuzzer + sanitizers
  libcrypt-dev
  libsodium-dev libyaml-dev  # ketchctl k8s: secretbox decryption, EncryptionConfiguration files
  etcd-client etcd-server
  python3 python3-etcd3 python3-pytest python3-pytest-xdist python3-h2
  python3-cryptography python3-yaml  # test_k8s: independent AES encryption, YAML parsing
  procps psmisc
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
