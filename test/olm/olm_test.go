package olm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"
	"golang.org/x/crypto/ssh"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	packageName = "nodeaccess-operator"
	catalogName = "nodeaccess-catalog"
	channel     = "stable"
	deployment  = "nodeaccess-controller-manager"
)

// A user installed the released 0.1.0 from the catalog months ago, created
// NodeAccess objects, and now gets 0.2.0 through the same Subscription. Every
// granted key stays on every node at every moment of the upgrade, while old
// and new managers and agents run side by side as a rollout mixes them; the
// users' objects are untouched, revocations still work, and the new manager
// puts the agents' report policy in place by itself. Then the operator
// holds the next upgrade while a revocation is unconfirmed, and lets it go
// once it is confirmed.
func TestInstallThenUpgradeThroughASubscription(t *testing.T) {
	ctx := context.Background()
	root := testenv.RepoRoot()
	bundle, err := manifests.GetBundleFromDir(filepath.Join(root, "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	current := bundle.CSV.Name
	currentVersion := bundle.CSV.Spec.Version.Version
	const released = packageName + ".v0.1.0"

	// Install the released 0.1.0: a catalog holding only it, a CatalogSource
	// by address, a Subscription.
	must(t, k8s.Create(ctx, &operatorsv1alpha1.CatalogSource{
		ObjectMeta: metav1.ObjectMeta{Name: catalogName, Namespace: olmNamespace},
		Spec: operatorsv1alpha1.CatalogSourceSpec{
			SourceType: operatorsv1alpha1.SourceTypeGrpc, Address: serveCatalog(t, catalogUpTo(t, root, released)),
			DisplayName: "nodeaccess-operator", Publisher: "nodeaccess",
		},
	}))
	must(t, k8s.Create(ctx, &operatorsv1alpha1.Subscription{
		ObjectMeta: metav1.ObjectMeta{Name: packageName, Namespace: installNamespace},
		Spec: &operatorsv1alpha1.SubscriptionSpec{
			CatalogSource: catalogName, CatalogSourceNamespace: olmNamespace,
			Package: packageName, Channel: channel, InstallPlanApproval: operatorsv1alpha1.ApprovalAutomatic,
		},
	}))
	start := time.Now()
	testenv.Eventually(t, timeout, released+" Succeeded", csvSucceeded(released))
	t.Logf("installed %s in %s", released, time.Since(start).Round(100*time.Millisecond))
	installedAsTheCSVSays(t, released)

	// The product under OLM, as 0.1.0 runs: its manager with the environment
	// OLM gave its Deployment, and its agents on both nodes.
	oldManager := startManager(t, filepath.Join(releaseDir, "manager"), "manager-0.1.0", released, "")
	hosts := map[string]*testenv.Host{}
	agents := map[string]*localcluster.Process{}
	for _, n := range nodes {
		hosts[n.Name] = testenv.NewHost(t, testenv.Account{Name: "alice", ID: 1001})
		agents[n.Name] = startAgent(t, filepath.Join(releaseDir, "agent"), n.Name, hosts[n.Name])
	}
	kept, onB, leaving := newKey(t, "kept"), newKey(t, "on-b"), newKey(t, "leaving")
	grant := func(name, pool string, k sshKey) {
		must(t, k8s.Create(ctx, &nav1.NodeAccess{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: nav1.NodeAccessSpec{
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": pool}},
				Users:        []nav1.UserAccess{{Name: "alice", Keys: []nav1.AuthorizedKey{{Key: k.line}}}},
			},
		}))
	}
	grant("team-kept", "a", kept)
	grant("team-b", "b", onB)
	grant("team-leaving", "a", leaving)
	testenv.Eventually(t, timeout, "keys on pool a", holds(hosts["pool-a-1"], kept.blob, leaving.blob))
	testenv.Eventually(t, timeout, "key on pool b", holds(hosts["pool-b-1"], onB.blob))
	testenv.Eventually(t, timeout, "team-kept Ready", ready("team-kept"))
	testenv.Eventually(t, timeout, "Upgradeable", upgradeable(released, metav1.ConditionTrue, controllers.UpgradeableReason))
	before := &nav1.NodeAccess{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "team-kept"}, before))

	// From here to the end of the rollout, every granted key must be on its
	// node at every sample.
	sampler := sampleKeys(map[*testenv.Host][]string{hosts["pool-a-1"]: {kept.blob}, hosts["pool-b-1"]: {onB.blob}})

	// 0.2.0 is published: OLM upgrades (nothing holds it).
	address := serveCatalog(t, filepath.Join(root, "catalog"))
	repointCatalog(t, address)
	testenv.Eventually(t, timeout, current+" Succeeded", csvSucceeded(current))
	testenv.Eventually(t, timeout, "the operator Deployment replaced", deploymentOwnedBy(current))
	testenv.Eventually(t, timeout, released+" removed", csvGone(released))
	installedAsTheCSVSays(t, current)

	// The Deployment's rollout: the old manager stops, the new one starts
	// (agents keep every file meanwhile). The new one runs as the service
	// account OLM created for it, with exactly the CSV's permissions.
	oldManager.Stop(syscall.SIGTERM)
	manager := startManager(t, filepath.Join(binDir, "manager"), "manager", current, managerKubeconfig(t), "--monitoring-recheck=500ms")

	// This cluster has no Prometheus operator: the bundle installed all the
	// same, and the new manager installs no alerts, saying so. Once the
	// Prometheus operator's CRDs appear, it creates them, owned by the
	// Deployment OLM made; the next upgrade below is then one on a cluster
	// with those CRDs.
	managerSaysNotInstalling(t)
	installPrometheusOperatorCRDs(t)
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor installed", monitoringOwnedByTheDeployment)

	// Skew: the new manager with the 0.1.0 agents. A revocation they prove,
	// and a new grant they write.
	must(t, k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "team-leaving"}}))
	testenv.Eventually(t, timeout, "team-leaving revoked by the 0.1.0 agent, proven to the new manager", gone("team-leaving"))
	must(t, holds(hosts["pool-a-1"], kept.blob)())
	added := newKey(t, "added")
	grant("team-added", "b", added)
	testenv.Eventually(t, timeout, "the 0.1.0 agent writes a grant of the new manager", holds(hosts["pool-b-1"], onB.blob, added.blob))

	// The new manager rolls the agent DaemonSet out: agents replaced one at a
	// time, each leaving its files as they are when it stops.
	testenv.Eventually(t, timeout, "the agent DaemonSet updated by the new manager", daemonSetOf(current))
	for _, n := range nodes {
		agents[n.Name].Stop(syscall.SIGTERM)
		agents[n.Name] = startAgent(t, filepath.Join(binDir, "agent"), n.Name, hosts[n.Name])
	}
	testenv.Eventually(t, timeout, "team-kept Ready on the new agents", ready("team-kept"))
	samples, missing := sampler.stop()
	if samples < 50 || missing != "" {
		t.Fatalf("%d samples during the upgrade; a granted key was missing: %s", samples, missing)
	}
	t.Logf("every granted key on its node at each of %d samples during the upgrade", samples)

	// The users' objects are as they were, and still served.
	after := &nav1.NodeAccess{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "team-kept"}, after))
	if after.UID != before.UID || after.Generation != before.Generation || !equalJSON(t, after.Spec, before.Spec) {
		t.Fatalf("team-kept changed across the upgrade: uid %s→%s, generation %d→%d", before.UID, after.UID, before.Generation, after.Generation)
	}
	testenv.Eventually(t, timeout, "Subscription at "+current, subscriptionAt(current))

	// Node isolation comes with the install: an agent's pod-bound token
	// cannot write another node's report.
	agentsWriteOnlyTheirOwnReport(t)

	// Revocations work after it.
	must(t, k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "team-added"}}))
	testenv.Eventually(t, timeout, "revoked after the upgrade", holds(hosts["pool-b-1"], onB.blob))
	testenv.Eventually(t, timeout, "team-added gone", gone("team-added"))
	testenv.Eventually(t, timeout, "Upgradeable", upgradeable(current, metav1.ConditionTrue, controllers.UpgradeableReason))

	// A revocation the node has not confirmed (its agent is paused): the
	// operator tells OLM not to replace it.
	agent := agents["pool-a-1"]
	leaving2 := newKey(t, "leaving-again")
	grant("team-leaving", "a", leaving2)
	testenv.Eventually(t, timeout, "key on the node", holds(hosts["pool-a-1"], kept.blob, leaving2.blob))
	must(t, agent.Signal(syscall.SIGSTOP))
	must(t, k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "team-leaving"}}))
	testenv.Eventually(t, timeout, "not Upgradeable", upgradeable(current, metav1.ConditionFalse, controllers.RevocationInProgressReason))

	// The next release is published; OLM finds it and holds it.
	next := publishNext(t, root, current, currentVersion)
	repointCatalog(t, serveCatalog(t, next.catalog))
	testenv.Eventually(t, timeout, next.name+" held by OLM", csvHeld(next.name))
	time.Sleep(3 * time.Second)
	must(t, csvHeld(next.name)())
	must(t, deploymentOwnedBy(current)())

	// The node comes back and confirms; the upgrade goes through.
	must(t, agent.Signal(syscall.SIGCONT))
	testenv.Eventually(t, timeout, "revoked on the node", holds(hosts["pool-a-1"], kept.blob))
	testenv.Eventually(t, timeout, "team-leaving gone", gone("team-leaving"))
	start = time.Now()
	testenv.Eventually(t, timeout, next.name+" Succeeded", csvSucceeded(next.name))
	testenv.Eventually(t, timeout, current+" removed", csvGone(current))
	testenv.Eventually(t, timeout, "Subscription at "+next.name, subscriptionAt(next.name))
	testenv.Eventually(t, timeout, "the operator Deployment replaced", deploymentOwnedBy(next.name))
	t.Logf("upgraded to %s in %s once the operator allowed it", next.name, time.Since(start).Round(100*time.Millisecond))
	installedAsTheCSVSays(t, next.name)
	must(t, holds(hosts["pool-a-1"], kept.blob)())
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor kept across the upgrade", monitoringOwnedByTheDeployment)
	manager.Stop(syscall.SIGTERM)

	// Uninstalling the operator takes the alerts and the ServiceMonitor
	// with its Deployment.
	uninstall(t, next.name)
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor removed with the operator", monitoringGone)
}

// catalogUpTo writes a copy of the committed catalog that holds releases up
// to and including csvName only, as the catalog stood when it was released.
func catalogUpTo(t *testing.T, root, csvName string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "catalog")
	must(t, testenv.CatalogUpTo(filepath.Join(root, "catalog"), dir, packageName, csvName, filepath.Join(k8sBin, "opm")))
	return dir
}

// repointCatalog points the CatalogSource at a newly served catalog: OLM
// reads a catalog again only when it reconnects.
func repointCatalog(t *testing.T, address string) {
	t.Helper()
	testenv.Eventually(t, timeout, "CatalogSource pointed at "+address, func() error {
		cs := &operatorsv1alpha1.CatalogSource{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: olmNamespace, Name: catalogName}, cs); err != nil {
			return err
		}
		cs.Spec.Address = address
		return k8s.Update(context.Background(), cs)
	})
}

func csvGone(name string) func() error {
	return func() error {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: name}, &operatorsv1alpha1.ClusterServiceVersion{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}
}

func subscriptionAt(csvName string) func() error {
	return func() error {
		sub := &operatorsv1alpha1.Subscription{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: packageName}, sub); err != nil {
			return err
		}
		if sub.Status.InstalledCSV != csvName || sub.Status.State != operatorsv1alpha1.SubscriptionStateAtLatest {
			return fmt.Errorf("installed %q, state %q", sub.Status.InstalledCSV, sub.Status.State)
		}
		return nil
	}
}

func gone(name string) func() error {
	return func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}
}

// daemonSetOf says the agent DaemonSet has the template the given version's
// manager renders: this version's agent flags.
func daemonSetOf(csvName string) func() error {
	return func() error {
		ds := &appsv1.DaemonSet{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: agentdaemonset.Name}, ds); err != nil {
			return err
		}
		want := agentdaemonset.DaemonSet(agentdaemonset.Options{Namespace: installNamespace, SSHDPort: 22})
		got := ds.Spec.Template.Spec.Containers[0].Args
		if !slices.Equal(got, want.Spec.Template.Spec.Containers[0].Args) {
			return fmt.Errorf("agent args %v, want %s's %v", got, csvName, want.Spec.Template.Spec.Containers[0].Args)
		}
		return nil
	}
}

// keySampler checks, every few milliseconds until stopped, that each host
// holds the keys it must.
type keySampler struct {
	stopc   chan struct{}
	done    chan struct{}
	samples int
	missing string
}

func sampleKeys(want map[*testenv.Host][]string) *keySampler {
	s := &keySampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopc:
				return
			case <-time.After(20 * time.Millisecond):
			}
			s.samples++
			for h, blobs := range want {
				held := h.ManagedKeys("alice")
				for _, b := range blobs {
					if !slices.Contains(held, b) && s.missing == "" {
						s.missing = fmt.Sprintf("at sample %d (%s) %s held %v", s.samples, time.Now().Format(time.StampMilli), h.Root, held)
					}
				}
			}
		}
	}()
	return s
}

func (s *keySampler) stop() (int, string) {
	close(s.stopc)
	<-s.done
	return s.samples, s.missing
}

// managerKubeconfig writes a kubeconfig for the manager's service account,
// as OLM created it, so the manager runs with exactly the CSV's permissions.
func managerKubeconfig(t *testing.T) string {
	t.Helper()
	clientset, err := kubernetes.NewForConfig(cluster.Config)
	must(t, err)
	tr, err := clientset.CoreV1().ServiceAccounts(installNamespace).CreateToken(context.Background(), deployment,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(3600))}}, metav1.CreateOptions{})
	must(t, err)
	cfg, err := clientcmd.LoadFromFile(cluster.Kubeconfig)
	must(t, err)
	for _, a := range cfg.AuthInfos {
		a.ClientCertificate, a.ClientKey, a.Token = "", "", tr.Status.Token
	}
	path := filepath.Join(t.TempDir(), "manager.kubeconfig")
	must(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// agentsWriteOnlyTheirOwnReport acts as the agent of pool-a-1, with a token
// bound to its DaemonSet pod there: writing pool-b-1's report is refused
// by the policy the manager put in place.
func agentsWriteOnlyTheirOwnReport(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	testenv.Eventually(t, timeout, "an agent pod on pool-a-1", func() error {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(installNamespace), client.MatchingLabels(agentdaemonset.Labels())); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName == "pool-a-1" && p.DeletionTimestamp == nil {
				pod = p
				return nil
			}
		}
		return fmt.Errorf("none of %d agent pods", len(pods.Items))
	})
	agent, err := testenv.PodTokenClient(ctx, cluster.Config, k8s.Scheme(), &pod)
	must(t, err)
	other := &nav1.NodeAccessReport{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "pool-b-1"}, other))
	patch := client.MergeFrom(other.DeepCopy())
	other.Status.Keys = 999
	err = agent.Status().Patch(ctx, other, patch)
	if err == nil || !strings.Contains(err.Error(), "only the report of its own node (pool-a-1)") {
		t.Fatalf("the agent of pool-a-1 wrote pool-b-1's report after a plain OLM install: %v", err)
	}
}

func ptrTo[T any](v T) *T { return &v }

// installedAsTheCSVSays checks what OLM created for the CSV: the CRDs
// established, the operator's Deployment available with the agent image and
// the OperatorCondition's name in its environment, the service accounts, and
// a cluster role binding for each of the CSV's cluster permissions.
func installedAsTheCSVSays(t *testing.T, csvName string) {
	t.Helper()
	ctx := context.Background()
	for _, crd := range []string{"nodeaccesses.nodeaccess.io", "renderednodeaccesses.nodeaccess.io", "nodeaccessreports.nodeaccess.io"} {
		obj := &apiextensionsv1.CustomResourceDefinition{}
		must(t, k8s.Get(ctx, client.ObjectKey{Name: crd}, obj))
		established := false
		for _, c := range obj.Status.Conditions {
			established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
		}
		if !established {
			t.Errorf("CRD %s not established", crd)
		}
	}
	dep := &appsv1.Deployment{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: deployment}, dep))
	env := map[string]string{}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["OPERATOR_CONDITION_NAME"] != csvName || !strings.Contains(env["RELATED_IMAGE_AGENT"], "nodeaccess-operator") {
		t.Errorf("operator Deployment env: OPERATOR_CONDITION_NAME=%q RELATED_IMAGE_AGENT=%q", env["OPERATOR_CONDITION_NAME"], env["RELATED_IMAGE_AGENT"])
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: csvName}, csv))
	bindings := &rbacv1.ClusterRoleBindingList{}
	must(t, k8s.List(ctx, bindings))
	for _, perm := range csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions {
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: perm.ServiceAccountName}, &corev1.ServiceAccount{}))
		bound := slices.ContainsFunc(bindings.Items, func(b rbacv1.ClusterRoleBinding) bool {
			return slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
				return s.Kind == "ServiceAccount" && s.Namespace == installNamespace && s.Name == perm.ServiceAccountName
			})
		})
		if !bound {
			t.Errorf("no ClusterRoleBinding for service account %s", perm.ServiceAccountName)
		}
	}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: csvName}, &operatorsv2.OperatorCondition{}))
}

// deploymentOwnedBy says which CSV's Deployment of the operator runs.
func deploymentOwnedBy(csvName string) func() error {
	return func() error {
		dep := &appsv1.Deployment{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: deployment}, dep); err != nil {
			return err
		}
		if owner := dep.Labels["olm.owner"]; owner != csvName {
			return fmt.Errorf("the operator Deployment belongs to %q, want %q", owner, csvName)
		}
		return nil
	}
}

func csvSucceeded(name string) func() error {
	return func() error {
		csv := &operatorsv1alpha1.ClusterServiceVersion{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: name}, csv); err != nil {
			return err
		}
		if csv.Status.Phase != operatorsv1alpha1.CSVPhaseSucceeded {
			return fmt.Errorf("phase %s (%s): %s", csv.Status.Phase, csv.Status.Reason, csv.Status.Message)
		}
		return nil
	}
}

// csvHeld says OLM keeps the CSV Pending because the operator it replaces
// is not upgradeable.
func csvHeld(name string) func() error {
	return func() error {
		csv := &operatorsv1alpha1.ClusterServiceVersion{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: name}, csv); err != nil {
			return err
		}
		if csv.Status.Phase != operatorsv1alpha1.CSVPhasePending || csv.Status.Reason != operatorsv1alpha1.CSVReasonOperatorConditionNotUpgradeable {
			return fmt.Errorf("phase %s (%s): %s", csv.Status.Phase, csv.Status.Reason, csv.Status.Message)
		}
		return nil
	}
}

func upgradeable(csvName string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		oc := &operatorsv2.OperatorCondition{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: installNamespace, Name: csvName}, oc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(oc.Spec.Conditions, operatorsv2.Upgradeable)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Upgradeable is %+v", c)
		}
		return nil
	}
}

func ready(name string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.ReadyCondition)
		if c == nil || c.Status != metav1.ConditionTrue || na.Status.ObservedGeneration != na.Generation {
			return fmt.Errorf("not Ready: %+v", c)
		}
		return nil
	}
}

// startManager runs a manager binary as the operator's Deployment would,
// as the user of kubeconfig ("" for the cluster's administrator).
func startManager(t *testing.T, bin, name, csvName, kubeconfig string, extra ...string) *localcluster.Process {
	t.Helper()
	args := []string{bin, "--namespace=" + installNamespace,
		"--agent-image=example.com/nodeaccess-operator:olm-e2e", "--operator-deployment=" + deployment,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--status-delay=200ms", "--revocation-timeout=10m"}
	args = append(args, extra...)
	if kubeconfig != "" {
		args = append(args, "--kubeconfig="+kubeconfig)
	}
	p, err := cluster.StartProcessEnv(logDir, name, []string{"OPERATOR_CONDITION_NAME=" + csvName}, args...)
	must(t, err)
	t.Cleanup(func() { p.Stop(syscall.SIGKILL) })
	return p
}

func startAgent(t *testing.T, bin, node string, host *testenv.Host) *localcluster.Process {
	t.Helper()
	p, err := cluster.StartProcessEnv(logDir, "agent-"+node, nil, bin, "--node-name="+node,
		"--namespace="+installNamespace, "--host-root="+host.Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s")
	must(t, err)
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGCONT)
		p.Stop(syscall.SIGKILL)
	})
	return p
}

type sshKey struct{ line, blob string }

func newKey(t *testing.T, comment string) sshKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	sp, err := ssh.NewPublicKey(pub)
	must(t, err)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return sshKey{line: line + " " + comment, blob: strings.Fields(line)[1]}
}

// holds checks that alice's managed keys on the host are exactly blobs.
func holds(host *testenv.Host, blobs ...string) func() error {
	return func() error {
		got := host.ManagedKeys("alice")
		if !sameSet(got, blobs) {
			return fmt.Errorf("the node holds %d keys, want %d", len(got), len(blobs))
		}
		return nil
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// release is a version published to a catalog.
type release struct{ name, catalog string }

// publishNext does what a release does: generate the bundle of this tree as
// the next version, replacing the current one, render it into a copy of
// the catalog, add it to every channel with a skipRange over all earlier
// versions, and validate the catalog.
func publishNext(t *testing.T, root, current string, currentVersion semver.Version) release {
	t.Helper()
	v := currentVersion
	v.Patch++
	v.Pre, v.Build = nil, nil
	tmp := t.TempDir()
	bundleDir := filepath.Join(tmp, "bundle")
	run(t, root, filepath.Join(binDir, "bundle"), "--version="+v.String(), "--channels=candidate,fast,stable",
		"--default-channel="+channel, "--image=quay.io/nodeaccess/nodeaccess-operator:"+v.String(),
		"--replaces="+current, "--out="+bundleDir, "--dockerfile="+filepath.Join(tmp, "bundle.Dockerfile"))

	pkgDir := filepath.Join(tmp, "catalog", packageName)
	must(t, os.MkdirAll(pkgDir, 0o755))
	files, err := filepath.Glob(filepath.Join(root, "catalog", packageName, "*.yaml"))
	must(t, err)
	for _, f := range files {
		data, err := os.ReadFile(f)
		must(t, err)
		if filepath.Base(f) == "package.yaml" {
			data = addToChannels(t, data, map[string]any{
				"name": packageName + ".v" + v.String(), "replaces": current, "skipRange": fmt.Sprintf(">=0.0.0 <%s", v),
			})
		}
		must(t, os.WriteFile(filepath.Join(pkgDir, filepath.Base(f)), data, 0o644))
	}
	rendered := run(t, root, filepath.Join(k8sBin, "opm"), "render", bundleDir, "-o", "yaml")
	must(t, os.WriteFile(filepath.Join(pkgDir, "bundle-v"+v.String()+".yaml"), rendered, 0o644))
	run(t, root, filepath.Join(k8sBin, "opm"), "validate", filepath.Join(tmp, "catalog"))
	return release{name: packageName + ".v" + v.String(), catalog: filepath.Join(tmp, "catalog")}
}

// addToChannels appends entry to every olm.channel document of a catalog file.
func addToChannels(t *testing.T, data []byte, entry map[string]any) []byte {
	t.Helper()
	var out bytes.Buffer
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		doc := map[string]any{}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc["schema"] == "olm.channel" {
			entries, _ := doc["entries"].([]any)
			doc["entries"] = append(entries, entry)
		}
		b, err := yaml.Marshal(doc)
		must(t, err)
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes()
}

func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func equalJSON(t *testing.T, a, b any) bool {
	ja, err := yaml.Marshal(a)
	must(t, err)
	jb, err := yaml.Marshal(b)
	must(t, err)
	return bytes.Equal(ja, jb)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
