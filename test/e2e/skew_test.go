package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// released builds (once) the binaries of the released 0.1.0 from its commit.
func released(t *testing.T) string {
	t.Helper()
	dir, err := testenv.ReleaseBinaries("0.1.0")
	must(t, err)
	return dir
}

// skewNode is a node of the skew tests, with its host root and an agent of
// the given binary directory.
func skewNode(t *testing.T, name, bin string) (*testenv.Host, *localcluster.Process) {
	t.Helper()
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": name},
		Annotations: map[string]string{localcluster.KwokAnnotation: "fake"}}}
	must(t, k8s.Create(context.Background(), obj))
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	h := testenv.NewHost(t, alice)
	hosts[name] = h
	t.Cleanup(func() { delete(hosts, name) })
	p, err := cluster.StartProcess(filepath.Join(workDir, "logs"), "agent-"+name, filepath.Join(bin, "agent"), "--node-name="+name,
		"--namespace="+namespace, "--host-root="+h.Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s")
	must(t, err)
	t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
	return h, p
}

func revoking(name string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(na.Status.Conditions, nav1.ProgressingCondition); c == nil || c.Reason != nav1.RevokingReason {
			return fmt.Errorf("progressing %+v", c)
		}
		return nil
	}
}

// During a rollout this manager runs with agents of the released 0.1.0:
// what it renders (grants, suspended grants with their accounts and no key,
// and a deletion's revocation object) is read rightly by them, and their
// reports prove a revocation to it.
func TestSkewNewManagerWithReleasedAgents(t *testing.T) {
	h, _ := skewNode(t, "skew-old-agent", released(t))
	k := newKey(t, "k")
	create(t, nodeAccess("skew-old-agent", map[string]string{"pool": "skew-old-agent"}, k))
	testenv.Eventually(t, timeout, "the 0.1.0 agent writes the key", holds("skew-old-agent", k))
	testenv.Eventually(t, timeout, "Ready on its report", ready("skew-old-agent"))

	update(t, "skew-old-agent", func(na *nav1.NodeAccess) { na.Spec.Suspend = true })
	testenv.Eventually(t, timeout, "suspended: the 0.1.0 agent removes the key", holds("skew-old-agent"))
	update(t, "skew-old-agent", func(na *nav1.NodeAccess) { na.Spec.Suspend = false })
	testenv.Eventually(t, timeout, "resumed", holds("skew-old-agent", k))

	must(t, k8s.Delete(context.Background(), nodeAccess("skew-old-agent", nil)))
	testenv.Eventually(t, timeout, "revoked by the 0.1.0 agent, proven to this manager", gone("skew-old-agent"))
	must(t, holds("skew-old-agent")())
	testenv.Eventually(t, timeout, "Revoked event", func() error {
		if reasons := eventsFor("skew-old-agent"); !contains(reasons, nav1.RevokedEventReason) {
			return fmt.Errorf("events %v", reasons)
		}
		return nil
	})
	if !holdsNothing(h) {
		t.Fatal("keys left")
	}
}

func holdsNothing(h *testenv.Host) bool { return len(h.ManagedKeys("alice")) == 0 }

// On a rollback the released 0.1.0 manager runs with this version's agents:
// it applies their reports rightly, and a grant this agent cannot prove gone
// (an unreadable account) is one the 0.1.0 manager counts as still held, so
// it does not report it revoked either.
//
// The vocabulary of the watch filter this manager published stays while
// the 0.1.0 manager runs: the new agent filters its watch by it, and still
// receives the grants the 0.1.0 manager writes without the filter labels,
// through its second watch.
func TestSkewReleasedManagerWithNewAgents(t *testing.T) {
	ctx := context.Background()
	bin := released(t)
	create(t, nodeAccess("skew-filtered", map[string]string{"pool": "skew-filtered"}, newKey(t, "f")))
	testenv.Eventually(t, timeout, "the filter vocabulary published", func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: nodefilter.ConfigMapName}, cm); err != nil {
			return err
		}
		if !slices.Contains(nodefilter.ParseKeys(cm.Data[nodefilter.KeysField]), "pool") {
			return fmt.Errorf("vocabulary %q", cm.Data[nodefilter.KeysField])
		}
		return nil
	})
	manager.Stop(syscall.SIGTERM)
	old, err := cluster.StartProcess(filepath.Join(workDir, "logs"), "manager-0.1.0", filepath.Join(bin, "manager"), "--namespace="+namespace,
		"--agent-image=example.com/nodeaccess-operator:e2e", "--operator-deployment=",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--status-delay=200ms", "--revocation-timeout=30s")
	must(t, err)
	t.Cleanup(func() {
		old.Stop(syscall.SIGTERM)
		var err error
		manager, err = startManager()
		must(t, err)
	})
	h, _ := skewNode(t, "skew-new-agent", binDir)
	k := newKey(t, "k")
	create(t, nodeAccess("skew-new-agent", map[string]string{"pool": "skew-new-agent"}, k))
	testenv.Eventually(t, timeout, "the key written", holds("skew-new-agent", k))
	testenv.Eventually(t, timeout, "Ready for the 0.1.0 manager", ready("skew-new-agent"))
	rendered := &nav1.RenderedNodeAccess{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "skew-new-agent"}, rendered))
	if rendered.Labels[nodefilter.Marker] != "" {
		t.Fatalf("the 0.1.0 manager's rendered grant has the filter labels %v: the second watch was not exercised", rendered.Labels)
	}

	home := filepath.Join(h.Root, "home", "alice")
	must(t, os.Chmod(home, 0o775))
	t.Cleanup(func() { _ = os.Chmod(home, 0o755) })
	must(t, k8s.Delete(ctx, nodeAccess("skew-new-agent", nil)))
	testenv.Eventually(t, timeout, "the 0.1.0 manager waits for the node", revoking("skew-new-agent"))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		must(t, revoking("skew-new-agent")())
		time.Sleep(200 * time.Millisecond)
	}
	must(t, os.Chmod(home, 0o755))
	testenv.Eventually(t, timeout, "the key removed once readable", holds("skew-new-agent"))
	testenv.Eventually(t, timeout, "then revoked", gone("skew-new-agent"))
}

// eventsFor lists the reasons of the Events about a NodeAccess.
func eventsFor(name string) []string {
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list); err != nil {
		return nil
	}
	var reasons []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "NodeAccess" && e.Regarding.Name == name {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
