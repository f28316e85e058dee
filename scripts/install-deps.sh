#!/bin/sh
# Installs what bakeoff needs on a Debian 12 machine and starts the Docker engine when it is not
# running. Safe to run again: it only installs what is missing. Needs root (or sudo).
set -eu

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
command -v gcc >/dev/null 2>&1 || need="$need gcc libc6-dev"
command -v make >/dev/null 2>&1 || need="$need make"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v dpkg-deb >/dev/null 2>&1 || need="$need dpkg"
# The OCI registry (registry 2.8) the push/pull tests start on 127.0.0.1.
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
command -v openssl >/dev/null 2>&1 || need="$need openssl"   # registry_e2e: the token service signs its JWTs
# The minimal guest kernel (`bakeoff kernel build`, docs/kernel.md) is built from Debian's
# linux-source-6.1 with these tools.
command -v bc >/dev/null 2>&1 || need="$need bc"
command -v bison >/dev/null 2>&1 || need="$need bison"
command -v flex >/dev/null 2>&1 || need="$need flex"
command -v patch >/dev/null 2>&1 || need="$need patch"   # crates/guest/kernel/*.patch
command -v cpio >/dev/null 2>&1 || need="$need cpio"
command -v xz >/dev/null 2>&1 || need="$need xz-utils"
[ -e /usr/include/libelf.h ] || need="$need libelf-dev"
# The Rumprun toolchain (`bakeoff toolchain build`): Xen's public headers for its xen platform.
[ -e /usr/include/xen/xen.h ] || need="$need libxen-dev"
for extra in "$@"; do
  command -v "$extra" >/dev/null 2>&1 || need="$need $extra"
done
if [ -n "$need" ]; then
  echo "install-deps: installing$need" >&2
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
# apt-get download of the guest kernel needs package lists.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi

if ! curl -fsS --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; then
  echo "install-deps: starting dockerd" >&2
  $SUDO sh -c 'nohup dockerd >/var/log/bakeoff-dockerd.log 2>&1 &'
  i=0
  until curl -fsS --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
      echo "install-deps: dockerd did not start within 30 s; see /var/log/bakeoff-dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
fi
echo "install-deps: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), $(qemu-system-x86_64 --version | head -1)" >&2
