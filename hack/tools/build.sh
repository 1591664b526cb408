#!/usr/bin/env bash
# Builds local control-plane, node and OLM binaries from Go modules into bin/k8s.
# Nothing is downloaded but modules from the Go module proxy.
#
#   hack/tools/build.sh etcd kube-apiserver [kube-controller-manager kubelet ...]
#
# A binary is rebuilt only when its tools module (go.mod/go.sum) changed since
# it was built, so a second run costs a few milliseconds. The Kubernetes
# binaries that need building are built by ONE `go build` invocation, so
# that they share the compile work and keep every core busy to the end.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${K8S_BIN_DIR:-$root/bin/k8s}
k8s_version=v1.37.2
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"

# The tools keep Go's default cgo setting whatever the caller's (opm links
# sqlite through cgo); -trimpath is passed below.
unset CGO_ENABLED GOFLAGS

mkdir -p "$out"

# sum DIR: the checksum of a tools module, kept in each binary's stamp.
sum() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -d' ' -f1; }

# fresh NAME DIR: whether bin/k8s/NAME was built from the module as it is.
fresh() {
	local stamp="$out/.$1.stamp"
	[[ -x "$out/$1" && -f "$stamp" && "$(cat "$stamp")" == "$(sum "$2")" ]]
}

# build NAME MODULE_DIR PACKAGE [go build flags...]
build() {
	local name=$1 dir=$2 pkg=$3
	shift 3
	fresh "$name" "$dir" && return 0
	echo "building $name (the first build takes minutes)" >&2
	local start=$SECONDS
	(cd "$dir" && go build -trimpath -o "$out/$name.tmp" "$@" "$pkg")
	mv -f "$out/$name.tmp" "$out/$name"
	sum "$dir" >"$out/.$name.stamp"
	echo "built $name in $((SECONDS - start))s" >&2
}

# build_k8s NAME...: the Kubernetes commands among NAMEs that are not fresh,
# in one go build (go build -o DIR/ PKG... writes one binary per package).
build_k8s() {
	local dir=$here/k8s name pkgs=() names=()
	for name in "$@"; do
		fresh "$name" "$dir" && continue
		names+=("$name")
		pkgs+=("k8s.io/kubernetes/cmd/$name")
	done
	((${#names[@]})) || return 0
	echo "building ${names[*]} in one go build (the first build takes many minutes)" >&2
	local start=$SECONDS tmp
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	(cd "$dir" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/" "${pkgs[@]}")
	for name in "${names[@]}"; do
		mv -f "$tmp/$name" "$out/$name"
		sum "$dir" >"$out/.$name.stamp"
	done
	echo "built ${names[*]} in $((SECONDS - start))s" >&2
}

k8s=()
for name in "$@"; do
	case $name in
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) k8s+=("$name") ;;
	etcd | kwok | olm | catalog | opm | validate-krew-manifest | promtool) ;;
	*)
		echo "build.sh: unknown binary $name" >&2
		exit 2
		;;
	esac
done
build_k8s "${k8s[@]}"

for name in "$@"; do
	case $name in
	etcd) build etcd "$here/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w" ;;
	kwok) build kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w" ;;
	validate-krew-manifest) build validate-krew-manifest "$here/krew" sigs.k8s.io/krew/cmd/validate-krew-manifest -ldflags "-s -w" ;;
	olm | catalog) build "$name" "$here/olm" "github.com/operator-framework/operator-lifecycle-manager/cmd/$name" -ldflags "-s -w" ;;
	opm) build opm "$here/opm" github.com/operator-framework/operator-registry/cmd/opm -tags=json1,containers_image_openpgp -ldflags "-s -w" ;;
	# remove_all_sd: without the cloud service discoveries, which promtool test rules never uses (half the build).
	promtool) build promtool "$here/promtool" github.com/prometheus/prometheus/cmd/promtool -tags=remove_all_sd -ldflags "-s -w" ;;
	esac
done
