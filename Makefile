# nodeaccess-operator. `make help` lists the targets.

# VERSION is the operator's release version: the image tag and the bundle's CSV version.
VERSION ?= 0.2.0
# IMAGE_TAG_BASE is the image repository of the manager and agent (one image, two binaries).
IMAGE_TAG_BASE ?= quay.io/nodeaccess/nodeaccess-operator
# IMG is the image `make deploy` and the bundle use.
IMG ?= $(IMAGE_TAG_BASE):$(VERSION)

# CHANNELS and DEFAULT_CHANNEL are the bundle's OLM channels.
CHANNELS ?= candidate,fast,stable
DEFAULT_CHANNEL ?= stable
# REPLACES is the CSV this version replaces in the upgrade graph, if any.
REPLACES ?= nodeaccess-operator.v0.1.0
# BUNDLE_IMG is the bundle image `make bundle-build` builds.
BUNDLE_IMG ?= $(IMAGE_TAG_BASE)-bundle:v$(VERSION)

# Tools: Go tools declared in go.mod, and control-plane binaries built from Go
# modules into bin/k8s by hack/tools/build.sh (nothing is downloaded but modules).
LOCALBIN ?= $(CURDIR)/bin
K8S_BIN ?= $(LOCALBIN)/k8s
CONTROLLER_GEN ?= go tool controller-gen
KUSTOMIZE ?= go tool kustomize
# KUBECTL is the kubectl that install/deploy use; `make kubectl` builds one into bin/k8s.
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(K8S_BIN)/kubectl)
CONTAINER_TOOL ?= docker

# NAMESPACE is the operator's namespace for `make run`.
NAMESPACE ?= nodeaccess-system

# Every build and test of the project compiles its packages once, into one Go
# build cache: static (no cgo) and with trimmed paths, as the image's binaries
# are built (hack/image), so the image, the suites' binaries and the tests
# share the compile work. (hack/tools/build.sh keeps Go's defaults.)
export CGO_ENABLED := 0
export GOFLAGS := -trimpath $(GOFLAGS)

# Test settings. GOTEST_FLAGS are passed to every `go test`.
GOTEST_FLAGS ?= -count=1
TEST_TIMEOUT ?= 30m

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs and the manager's ClusterRole from the markers in api/ and controllers/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify
verify: generate manifests catalog ## Fail when generated files (deepcopy, CRDs, RBAC, bundle, catalog) are not committed up to date, or Go files are not gofmt-ed.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then \
		echo "Not gofmt-ed: $$unformatted"; exit 1; \
	fi
	@if [ -n "$$(git status --porcelain -- api config bundle bundle.Dockerfile catalog)" ]; then \
		echo "Generated files are out of date; run 'make generate manifests catalog' and commit:"; \
		git status --porcelain -- api config bundle bundle.Dockerfile catalog; git --no-pager diff --stat -- api config bundle bundle.Dockerfile catalog; exit 1; \
	fi

.PHONY: test
test: manifests generate fmt vet k8s-bin node-packages ## Run every test: unit, fuzz seeds, envtest suites (real kube-apiserver and etcd), the e2e, OLM and real-node suites (root).
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go test $(GOTEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-e2e
test-e2e: manifests generate k8s-bin node-packages ## Run only the e2e suite: the local cluster, the manager and agents as processes, faults injected.
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go test $(GOTEST_FLAGS) -timeout $(TEST_TIMEOUT) -v ./test/e2e/

.PHONY: test-olm
test-olm: manifests generate k8s-bin ## Run only the OLM suite: install from catalog/ through real OLM, then upgrade through the Subscription (needs root: private network namespace).
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go test $(GOTEST_FLAGS) -timeout $(TEST_TIMEOUT) -v ./test/olm/

.PHONY: test-realnode
test-realnode: manifests generate k8s-bin node-packages ## Run only the real-node suite: the operator installed by real OLM on a real kubelet, containerd and sshd in private namespaces, proven by ssh logins (needs root).
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go test $(GOTEST_FLAGS) -timeout $(TEST_TIMEOUT) -v ./test/realnode/

# BENCH_NODES are the node counts `make bench` measures (5000 works, slowly);
# BENCH_FLAGS are more flags of hack/bench, e.g. -hosts-dir=/dev/shm to keep
# the simulated nodes' host roots on a tmpfs.
BENCH_NODES ?= 100,1000
BENCH_FLAGS ?=

.PHONY: bench
bench: envtest bench-realnode ## Measure propagation latency, API cost and memory at 100 and 1,000 nodes, and time to login on the real node (not part of make test); writes bin/bench/results.json and docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$(K8S_BIN)" go run ./hack/bench -nodes=$(BENCH_NODES) $(BENCH_FLAGS)

# BENCH_LOGIN_REPS is how many grants and revocations `make bench-realnode` times.
BENCH_LOGIN_REPS ?= 20

.PHONY: bench-realnode
bench-realnode: manifests generate k8s-bin node-packages ## Measure time to login on the real node, installed through OLM: create to first ssh login, delete to first refusal (p50, p99; needs root).
	REALNODE_BENCH_REPS=$(BENCH_LOGIN_REPS) KUBEBUILDER_ASSETS="$(K8S_BIN)" go test -count=1 -timeout $(TEST_TIMEOUT) -run '^$$' -bench '^BenchmarkTimeToLogin$$' -benchtime 1x -v ./test/realnode/

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	@for pkg in $$(go list ./...); do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzzing $$pkg $$target"; \
			go test -run '^$$' -fuzz "^$$target$$" -fuzztime $${FUZZTIME:-30s} $$pkg; \
		done; \
	done

##@ Build

.PHONY: build
build: generate fmt vet ## Build the manager, agent and kubectl-nodeaccess binaries into bin/.
	go build -o $(LOCALBIN)/manager .
	go build -o $(LOCALBIN)/agent ./cmd/agent
	go build -o $(LOCALBIN)/kubectl-nodeaccess ./cmd/kubectl-nodeaccess

.PHONY: run
run: manifests generate fmt vet ## Run the manager against the cluster of the current kubeconfig.
	go run . --namespace=$(NAMESPACE) --metrics-bind-address=0 --health-probe-bind-address=127.0.0.1:8081

# IMAGE_DIR holds the image archives `make image` writes.
IMAGE_DIR ?= $(LOCALBIN)/image

.PHONY: image
image: ## Build the operator image as an archive, without docker or a registry: bin/image/nodeaccess-operator.tar, tagged IMG (ctr images import, docker load).
	go run ./hack/image operator -tag $(IMG) -o $(IMAGE_DIR)/nodeaccess-operator.tar

.PHONY: pause-image
pause-image: ## Build the real node's sandbox (pause) image archive, bin/image/pause.tar (test infrastructure).
	go run ./hack/image pause -o $(IMAGE_DIR)/pause.tar

.PHONY: docker-build
docker-build: ## Build the operator image with docker (the same image as make image).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the operator image.
	$(CONTAINER_TOOL) push $(IMG)

##@ OLM

.PHONY: bundle
bundle: manifests ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/ and config/manifests/bases.
	go run ./hack/bundle --version=$(VERSION) --channels=$(CHANNELS) --default-channel=$(DEFAULT_CHANNEL) --image=$(IMG) --replaces=$(REPLACES)

.PHONY: catalog
catalog: bundle ## Render the bundle into the file-based catalog (catalog/) and validate it with opm.
	hack/tools/build.sh opm
	mkdir -p catalog/nodeaccess-operator
	tmp=$$(mktemp -d) && TMPDIR=$$tmp $(K8S_BIN)/opm render bundle/ -o yaml > catalog/nodeaccess-operator/bundle-v$(VERSION).yaml; rc=$$?; rm -rf "$$tmp"; exit $$rc
	$(K8S_BIN)/opm validate catalog

.PHONY: bundle-build
bundle-build: ## Build the bundle image.
	$(CONTAINER_TOOL) build -f bundle.Dockerfile -t $(BUNDLE_IMG) .

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs (and every NodeAccess) from the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests ## Deploy the operator with kustomize (without OLM) to the cluster of the current kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: ## Remove the operator deployed with `make deploy`: first revoke every NodeAccess (hack/revoke-all.sh), unless KEEP_KEYS=true.
	@if [ "$(KEEP_KEYS)" != "true" ]; then KUBECTL="$(KUBECTL)" hack/revoke-all.sh; else echo "KEEP_KEYS=true: every key stays on the nodes"; fi
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -
	$(KUBECTL) delete --ignore-not-found validatingadmissionpolicybinding,validatingadmissionpolicy nodeaccess-agent-own-report

##@ Local control plane

.PHONY: envtest
envtest: ## Build etcd, kube-apiserver and kubectl into bin/k8s (from Go modules; minutes the first time).
	hack/tools/build.sh etcd kube-apiserver kubectl

.PHONY: k8s-bin
k8s-bin: ## Build the whole local cluster into bin/k8s: etcd, kube-apiserver, kubectl, kube-controller-manager, kube-scheduler, kubelet, kube-proxy (one go build), kwok, opm, OLM's olm and catalog, krew's manifest validator and promtool.
	hack/tools/build.sh etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy kwok opm olm catalog validate-krew-manifest promtool

.PHONY: node-packages
node-packages: ## Install the Debian packages a real node and the tests need when they are missing (containerd, runc, CNI plugins, iptables, iproute2, OpenSSH, rsyslog); never starts a service.
	hack/node-packages.sh

.PHONY: kubectl
kubectl: ## Build kubectl into bin/k8s.
	hack/tools/build.sh kubectl

# DEMO_REAL_NODE: auto adds a real node to the demo where the machine allows
# it (root, the Debian packages of hack/node-packages.sh), true fails where it
# does not, false runs the fake nodes alone.
DEMO_REAL_NODE ?= auto
# DEMO_K8S are the cluster binaries every demo needs; a real node adds kubelet and kube-proxy.
DEMO_K8S = etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kwok

.PHONY: demo
demo: build ## Run the product on a local cluster and leave it running: manager, agents on fake nodes, the samples, the files they write; as root also a real node, ending with an ssh login into it.
	go build -o $(LOCALBIN)/demo ./hack/demo
	@if [ "$$(id -u)" = 0 ] && [ "$(DEMO_REAL_NODE)" != false ]; then hack/node-packages.sh || true; fi
	@if $(LOCALBIN)/demo -real-node=$(DEMO_REAL_NODE) preflight >/dev/null 2>&1; then \
		hack/tools/build.sh $(DEMO_K8S) kubelet kube-proxy && $(MAKE) --no-print-directory image pause-image || hack/tools/build.sh $(DEMO_K8S); \
	else \
		hack/tools/build.sh $(DEMO_K8S); \
	fi
	KUBEBUILDER_ASSETS="$(K8S_BIN)" $(LOCALBIN)/demo -real-node=$(DEMO_REAL_NODE)

.PHONY: scorecard-local
scorecard-local: demo ## Run the operator's own scorecard test (cmd/scorecard) against the demo cluster: the alm-examples become Ready and are revoked.
	go build -o $(LOCALBIN)/scorecard ./cmd/scorecard
	_demo/bin/demo-exec $(LOCALBIN)/scorecard --bundle=bundle --kubeconfig=_demo/cluster/kubeconfig --exit-code examples-become-ready

.PHONY: demo-down
demo-down: ## Stop the demo and every process it started.
	go run ./hack/demo down
