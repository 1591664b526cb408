#!/usr/bin/env bash
# Installs the Debian packages a real node of the local cluster needs, when
# they are missing: a container runtime (containerd, runc), the CNI plugins,
# iptables (kube-proxy's iptables mode), iproute2, OpenSSH's server and
# client, rsyslog, and systemd (for its journald and journalctl only; it is
# never started as the machine's init). Quiet when everything is there.
#
#   hack/node-packages.sh [PKG...]           install what is missing (root, apt)
#   hack/node-packages.sh --check [PKG...]   only say what is missing (exit 1 if anything is)
#
# With PKG arguments, only those packages (a test that needs just OpenSSH,
# say); without, every package of a real node.
#
# It never replaces an installed container runtime (a containerd or runc from
# another package counts as installed), never removes a package (apt-get
# --no-remove), and never starts or enables a service: a policy-rc.d that
# forbids every start is in place for the duration of the install (the one
# that was there, if any, is put back), and on a systemd machine the units
# the new packages enabled are disabled again.
set -euo pipefail

check=false
if [[ ${1:-} == --check ]]; then
	check=true
	shift
fi
packages=(containerd runc containernetworking-plugins iptables iproute2 openssh-server openssh-client rsyslog systemd)
if (($#)); then
	packages=("$@")
fi
for p in "${packages[@]}"; do
	if [[ ! $p =~ ^[a-z0-9][a-z0-9.+-]+$ ]]; then
		echo "node-packages.sh: not a Debian package name: $p" >&2
		exit 2
	fi
done

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]; }

missing=()
for p in "${packages[@]}"; do
	if command -v dpkg-query >/dev/null && installed "$p"; then
		continue
	fi
	case $p in
	# Any container runtime already on the machine is used as it is, never replaced.
	containerd) if command -v containerd >/dev/null && command -v ctr >/dev/null; then continue; fi ;;
	runc) if command -v runc >/dev/null; then continue; fi ;;
	esac
	missing+=("$p")
done

((${#missing[@]})) || exit 0

if $check; then
	echo "node-packages.sh: missing Debian packages: ${missing[*]} (run hack/node-packages.sh as root to install them)" >&2
	exit 1
fi
if [[ $(id -u) != 0 ]]; then
	echo "node-packages.sh: cannot install ${missing[*]}: not root (run hack/node-packages.sh as root, or install them by hand)" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
	echo "node-packages.sh: cannot install ${missing[*]}: no apt-get (not a Debian-based machine; install them by hand)" >&2
	exit 1
fi
for p in "${missing[@]}"; do
	case $p in
	containerd | runc)
		# Docker's containerd.io bundles containerd and runc and conflicts with Debian's.
		if installed containerd.io; then
			echo "node-packages.sh: containerd.io is installed; not installing Debian's $p over it" >&2
			exit 1
		fi
		;;
	esac
done

# No service may start during the install: policy-rc.d exit code 101 means
# "action forbidden" to invoke-rc.d and deb-systemd-invoke.
policy=/usr/sbin/policy-rc.d
saved=""
if [[ -e $policy || -L $policy ]]; then
	saved=$(mktemp /usr/sbin/.policy-rc.d.saved.XXXXXX)
	mv -f "$policy" "$saved"
fi
restore() {
	rm -f "$policy"
	if [[ -n $saved ]]; then mv -f "$saved" "$policy"; fi
}
trap restore EXIT
printf '#!/bin/sh\n# hack/node-packages.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
chmod 755 "$policy"

echo "node-packages.sh: installing ${missing[*]}" >&2
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends --no-remove \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null

# On a systemd machine the packages' postinst enabled their units; undo that.
if [[ -d /run/systemd/system ]] && command -v deb-systemd-helper >/dev/null; then
	for p in "${missing[@]}"; do
		dpkg-query -L "$p" 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/]+\.(service|socket|timer)$' | while read -r unit; do
			deb-systemd-helper --quiet disable "$(basename "$unit")" || true
		done
	done
fi
echo "node-packages.sh: installed ${missing[*]} in $((SECONDS - start))s" >&2
