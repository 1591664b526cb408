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
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	packageName = "nodeaccess-operator"
	catalogName = "nodeaccess-catalog"
	channel     = "stable"
	deployment  = "nodeaccess-controller-manager"
)

// A user installs the operator from the catalog this repository ships,
// creates NodeAccess objects, and later gets the next release through the
// same Subscription. The operator holds the upgrade while a revocation is
// unconfirmed; once it is confirmed OLM replaces the operator, and the
// users' objects are untouched.
func TestInstallThenUpgradeThroughASubscription(t *testing.T) {
	ctx := context.Background()
	root := testenv.RepoRoot()
	bundle, err := manifests.GetBundleFromDir(filepath.Join(root, "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	current := bundle.CSV.Name
	currentVersion := bundle.CSV.Spec.Version.Version

	// Install: the committed catalog, a CatalogSource by address, a Subscription.
	must(t, k8s.Create(ctx, &operatorsv1alpha1.CatalogSource{
		ObjectMeta: metav1.ObjectMeta{Name: catalogName, Namespace: olmNamespace},
		Spec: operatorsv1alpha1.CatalogSourceSpec{
			SourceType: operatorsv1alpha1.SourceTypeGrpc, Address: serveCatalog(t, filepath.Join(root, "catalog")),
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
	testenv.Eventually(t, timeout, current+" Succeeded", csvSucceeded(current))
	t.Logf("installed %s in %s", current, time.Since(start).Round(100*time.Millisecond))
	installedAsTheCSVSays(t, current)

	// The product under OLM: the manager with the environment OLM gave its
	// Deployment, and one node's agent.
	manager := startManager(t, current)
	host := testenv.NewHost(t, testenv.Account{Name: "alice", ID: 1001})
	agent := startAgent(t, nodes[0].Name, host)
	kept, leaving := newKey(t, "kept"), newKey(t, "leaving")
	for name, k := range map[string]string{"team-kept": kept.line, "team-leaving": leaving.line} {
		must(t, k8s.Create(ctx, &nav1.NodeAccess{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: nav1.NodeAccessSpec{
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
				Users:        []nav1.UserAccess{{Name: "alice", Keys: []nav1.AuthorizedKey{{Key: k}}}},
			},
		}))
	}
	testenv.Eventually(t, timeout, "keys on the node", holds(host, kept.blob, leaving.blob))
	testenv.Eventually(t, timeout, "team-kept Ready", ready("team-kept"))
	testenv.Eventually(t, timeout, "Upgradeable", upgradeable(current, metav1.ConditionTrue, controllers.UpgradeableReason))
	before := &nav1.NodeAccess{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "team-kept"}, before))

	// This cluster has no Prometheus operator: the bundle installed all the
	// same, and the manager installs no alerts, saying so. Once the
	// Prometheus operator's CRDs appear, it creates them, owned by the
	// Deployment OLM made; the upgrade below is then an install on a
	// cluster with those CRDs.
	managerSaysNotInstalling(t)
	installPrometheusOperatorCRDs(t)
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor installed", monitoringOwnedByTheDeployment)

	// A revocation the node has not confirmed (its agent is paused): the
	// operator tells OLM not to replace it.
	must(t, agent.Signal(syscall.SIGSTOP))
	must(t, k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "team-leaving"}}))
	testenv.Eventually(t, timeout, "not Upgradeable", upgradeable(current, metav1.ConditionFalse, controllers.RevocationInProgressReason))

	// The next release is published; OLM finds it and holds it.
	next := publishNext(t, root, current, currentVersion)
	address := serveCatalog(t, next.catalog)
	testenv.Eventually(t, timeout, "CatalogSource pointed at the new catalog", func() error {
		cs := &operatorsv1alpha1.CatalogSource{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: olmNamespace, Name: catalogName}, cs); err != nil {
			return err
		}
		cs.Spec.Address = address
		return k8s.Update(ctx, cs)
	})
	testenv.Eventually(t, timeout, next.name+" held by OLM", csvHeld(next.name))
	time.Sleep(3 * time.Second)
	must(t, csvHeld(next.name)())
	must(t, deploymentOwnedBy(current)())

	// The node comes back and confirms; the upgrade goes through.
	must(t, agent.Signal(syscall.SIGCONT))
	testenv.Eventually(t, timeout, "revoked on the node", holds(host, kept.blob))
	testenv.Eventually(t, timeout, "team-leaving gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "team-leaving"}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	start = time.Now()
	testenv.Eventually(t, timeout, next.name+" Succeeded", csvSucceeded(next.name))
	testenv.Eventually(t, timeout, current+" removed", func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: current}, &operatorsv1alpha1.ClusterServiceVersion{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "Subscription at "+next.name, func() error {
		sub := &operatorsv1alpha1.Subscription{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: packageName}, sub); err != nil {
			return err
		}
		if sub.Status.InstalledCSV != next.name || sub.Status.State != operatorsv1alpha1.SubscriptionStateAtLatest {
			return fmt.Errorf("installed %q, state %q", sub.Status.InstalledCSV, sub.Status.State)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "the operator Deployment replaced", deploymentOwnedBy(next.name))
	t.Logf("upgraded to %s in %s once the operator allowed it", next.name, time.Since(start).Round(100*time.Millisecond))
	installedAsTheCSVSays(t, next.name)
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor kept across the upgrade", monitoringOwnedByTheDeployment)

	// The users' objects are as they were, and still served.
	after := &nav1.NodeAccess{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "team-kept"}, after))
	if after.UID != before.UID || after.Generation != before.Generation || !equalJSON(t, after.Spec, before.Spec) {
		t.Fatalf("team-kept changed across the upgrade: uid %s→%s, generation %d→%d", before.UID, after.UID, before.Generation, after.Generation)
	}
	must(t, holds(host, kept.blob)())
	manager.Stop(syscall.SIGTERM)
	agent.Stop(syscall.SIGTERM)

	// Uninstalling the operator takes the alerts and the ServiceMonitor
	// with its Deployment.
	uninstall(t, next.name)
	testenv.Eventually(t, timeout, "alerts and ServiceMonitor removed with the operator", monitoringGone)
}

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

func startManager(t *testing.T, csvName string) *localcluster.Process {
	t.Helper()
	p, err := cluster.StartProcessEnv(logDir, "manager", []string{"OPERATOR_CONDITION_NAME=" + csvName},
		filepath.Join(binDir, "manager"), "--namespace="+installNamespace,
		"--agent-image=example.com/nodeaccess-operator:olm-e2e", "--operator-deployment="+deployment,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--status-delay=200ms", "--revocation-timeout=10m", "--monitoring-recheck=500ms")
	must(t, err)
	t.Cleanup(func() { p.Stop(syscall.SIGKILL) })
	return p
}

func startAgent(t *testing.T, node string, host *testenv.Host) *localcluster.Process {
	t.Helper()
	p, err := cluster.StartProcessEnv(logDir, "agent-"+node, nil, filepath.Join(binDir, "agent"), "--node-name="+node,
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
