#!/usr/bin/env bash
# Builds local control-plane and OLM binaries from Go modules into bin/k8s.
# Nothing is downloaded but modules from the Go module proxy.
#
#   hack/tools/build.sh etcd kube-apiserver [kube-controller-manager ...]
#
# A binary is rebuilt only when its tools module (go.mod/go.sum) changed since
# it was built, so a second run costs a few milliseconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${K8S_BIN_DIR:-$root/bin/k8s}
k8s_version=v1.37.2
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"

mkdir -p "$out"

# build NAME MODULE_DIR PACKAGE [go build flags...]
build() {
	local name=$1 dir=$2 pkg=$3
	shift 3
	local stamp="$out/.$name.stamp" sum
	sum=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)
	if [[ -x "$out/$name" && -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
		return 0
	fi
	echo "building $name (first build of a Kubernetes binary takes minutes)" >&2
	(cd "$dir" && go build -trimpath -o "$out/$name.tmp" "$@" "$pkg")
	mv -f "$out/$name.tmp" "$out/$name"
	echo "$sum" >"$stamp"
}

for name in "$@"; do
	case $name in
	etcd) build etcd "$here/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w" ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl)
		build "$name" "$here/k8s" "k8s.io/kubernetes/cmd/$name" -ldflags "$k8s_ldflags" ;;
	kwok) build kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w" ;;
	validate-krew-manifest) build validate-krew-manifest "$here/krew" sigs.k8s.io/krew/cmd/validate-krew-manifest -ldflags "-s -w" ;;
	olm | catalog) build "$name" "$here/olm" "github.com/operator-framework/operator-lifecycle-manager/cmd/$name" -ldflags "-s -w" ;;
	# remove_all_sd: without the cloud service discoveries, which promtool test rules never uses (half the build).
	promtool) build promtool "$here/promtool" github.com/prometheus/prometheus/cmd/promtool -tags=remove_all_sd -ldflags "-s -w" ;;
	opm) build opm "$here/opm" github.com/operator-framework/operator-registry/cmd/opm -tags=json1,containers_image_openpgp -ldflags "-s -w" ;;
	*)
		echo "build.sh: unknown binary $name" >&2
		exit 2
		;;
	esac
done
