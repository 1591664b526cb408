#!/usr/bin/env bash
# Installs the given Debian packages when they are missing; does nothing when
# every one is installed. Runs `apt-get update` first (only when something is
# missing), installs without recommended packages, and never starts a service:
# a policy-rc.d that forbids it is in place for the install when none exists.
#
#   hack/debian-packages.sh openssh-server openssh-client
set -euo pipefail

if [[ $# -eq 0 ]]; then
	echo "usage: $0 PACKAGE..." >&2
	exit 2
fi

missing=()
for pkg in "$@"; do
	if [[ ! $pkg =~ ^[a-z0-9][a-z0-9.+-]+$ ]]; then
		echo "debian-packages.sh: not a Debian package name: $pkg" >&2
		exit 2
	fi
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [[ $status != installed ]]; then
		missing+=("$pkg")
	fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "debian-packages.sh: installing ${missing[*]} needs root" >&2
	exit 1
fi
echo "debian-packages.sh: installing ${missing[*]}" >&2

# Packages' maintainer scripts start their services through invoke-rc.d,
# which asks policy-rc.d first; exit code 101 means "never".
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
