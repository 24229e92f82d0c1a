#!/usr/bin/env bash
# Installs the Debian packages casfs's tests, demo and benchmarks use, when
# they are missing. Needs root on Debian; elsewhere it says what is missing.
set -euo pipefail

# Go tools the lint step runs, installed into $GOTOOLS (bin/tools by
# default) when missing. "prereqs.sh tools" installs only these;
# "prereqs.sh packages" only the Debian packages (make test's lint part
# installs the tools itself, alongside the tests).
install_tools() {
  local dir="${GOTOOLS:-$(cd "$(dirname "$0")/.." && pwd)/bin/tools}"
  if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$dir/staticcheck" ]; then
    echo "prereqs: installing staticcheck into $dir"
    GOBIN="$dir" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
  fi
}
[ "${1:-}" = packages ] || install_tools
[ "${1:-}" = tools ] && exit 0

# command -> package
declare -A need=(
  [fusermount3]=fuse3
  [docker-registry]=docker-registry
  [runc]=runc
  [skopeo]=skopeo
  [containerd]=containerd
  [ctr]=containerd
  [umoci]=umoci
  [getfattr]=attr
  [htpasswd]=apache2-utils
  [openssl]=openssl
  [hyperfine]=hyperfine
  [busybox]=busybox-static
  [curl]=curl
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "prereqs: missing packages: $pkgs(install them as root with apt-get)" >&2
  exit 0
fi
echo "prereqs: installing $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The registry and containerd packages try to start their services; the
# tests start their own instances on free loopback ports instead.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.casfs
if [ ! -e /usr/sbin/policy-rc.d ]; then cp /usr/sbin/policy-rc.d.casfs /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
rm -f /usr/sbin/policy-rc.d.casfs
# shellcheck disable=SC2086
apt-get install -y -qq $pkgs >/dev/null
