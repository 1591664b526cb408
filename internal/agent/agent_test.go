package agent_test

// These tests run agents against a real kube-apiserver and etcd, each agent
// with its own client, cache and temp host root, as separate nodes would.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	namespace = "nodeaccess-system"
	aliceData = "AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq"
	bobData   = "AAAAC3NzaC1lZDI1NTE5AAAAILx8BlVk0iQ8dc2TlIotZ8phKS+nHaE6FNvJayhFxslz"
	handLine  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHandWrittenHandWrittenHandWrittenHandWrit admin@hand-written"
)

var (
	env       *testenv.Env
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	if k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// newHost makes a host root with accounts alice (1001) and deploy (1002),
// and alice's hand-written authorized_keys.
func newHost(t *testing.T) *testenv.Host {
	t.Helper()
	h := testenv.NewHost(t, testenv.Account{Name: "alice", ID: 1001}, testenv.Account{Name: "deploy", ID: 1002})
	h.WriteKeys(t, "alice", 1001, "# alice's own keys\n"+handLine+"\n")
	return h
}

func startAgent(t *testing.T, node string, h *testenv.Host) *testenv.Agent {
	return env.StartAgent(t, node, namespace, h, 2*time.Second)
}

func createNode(t *testing.T, name string, lbls map[string]string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	must(t, k8sClient.Create(context.Background(), node))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), node) })
}

// grant is a rendered NodeAccess as the manager would write it.
func grant(name string, selector map[string]string, users ...nav1.RenderedUser) *nav1.RenderedNodeAccess {
	return &nav1.RenderedNodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: nav1.RenderedNodeAccessSpec{
			NodeAccessName: name, NodeAccessUID: "uid-" + name, Generation: 1,
			NodeSelector: metav1.LabelSelector{MatchLabels: selector},
			Users:        users,
		},
	}
}

func key(data, comment string) nav1.RenderedKey {
	return nav1.RenderedKey{Type: "ssh-ed25519", Data: data, Comment: comment}
}

// apply creates or updates a rendered grant, stamping its hash.
func apply(t *testing.T, g *nav1.RenderedNodeAccess) {
	t.Helper()
	ctx := context.Background()
	hash, err := desiredstate.Hash(&g.Spec)
	must(t, err)
	g.Spec.Hash = hash
	existing := &nav1.RenderedNodeAccess{}
	err = k8sClient.Get(ctx, client.ObjectKeyFromObject(g), existing)
	switch {
	case apierrors.IsNotFound(err):
		must(t, k8sClient.Create(ctx, g))
	case err != nil:
		t.Fatal(err)
	default:
		existing.Spec = g.Spec
		must(t, k8sClient.Update(ctx, existing))
	}
}

func remove(t *testing.T, name string) {
	t.Helper()
	g := &nav1.RenderedNodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	must(t, client.IgnoreNotFound(k8sClient.Delete(context.Background(), g)))
}

var eventually = testenv.Eventually

// holds checks that the user's file holds exactly the given key blobs in the
// managed block, and keeps the hand-written lines when it should.
func holds(h *testenv.Host, user string, wantHand bool, blobs ...string) func() error {
	return func() error {
		content := h.Read(user)
		if managed := h.ManagedKeys(user); strings.Join(managed, ",") != strings.Join(blobs, ",") {
			return fmt.Errorf("%s holds managed keys %v, want %v; file:\n%s", user, managed, blobs, content)
		}
		if wantHand && !strings.Contains(content, "# alice's own keys\n"+handLine+"\n") {
			return fmt.Errorf("hand-written lines lost:\n%s", content)
		}
		return nil
	}
}

func TestAgentsKeepFilesInLineWithRenderedGrants(t *testing.T) {
	ctx := context.Background()
	hostA, hostB := newHost(t), newHost(t)
	createNode(t, "node-a", map[string]string{"pool": "a"})
	createNode(t, "node-b", map[string]string{"pool": "b"})
	agentA := startAgent(t, "node-a", hostA)
	startAgent(t, "node-b", hostB)
	const timeout = 10 * time.Second

	// Create: only the selected node receives the key, next to the hand-written lines.
	g := grant("team-a", map[string]string{"pool": "a"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	apply(t, g)
	eventually(t, timeout, "node-a alice holds the key", holds(hostA, "alice", true, aliceData))
	must(t, holds(hostB, "alice", true)())

	// The file is the user's, with the modes sshd wants.
	info, err := os.Stat(hostA.KeysFile("alice"))
	must(t, err)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("authorized_keys mode %v, want 0600", info.Mode().Perm())
	}

	// The node's report says the grant is applied with the current hash.
	eventually(t, timeout, "node-a reports the grant applied", reportHas(ctx, "node-a", g))

	// Update: a second key and a second account.
	g.Spec.Users = []nav1.RenderedUser{
		{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice"), key(bobData, "bob")}},
		{Name: "deploy", Keys: []nav1.RenderedKey{key(bobData, "bob")}},
	}
	apply(t, g)
	eventually(t, timeout, "alice holds both keys", holds(hostA, "alice", true, aliceData, bobData))
	eventually(t, timeout, "deploy holds bob's key", holds(hostA, "deploy", false, bobData))
	eventually(t, timeout, "node-a reports the new hash", reportHas(ctx, "node-a", g))

	// Suspend: every key goes, the hand-written lines stay.
	g.Spec.Suspend = true
	apply(t, g)
	eventually(t, timeout, "suspended keys removed", holds(hostA, "alice", true))
	eventually(t, timeout, "suspended keys removed from deploy", holds(hostA, "deploy", false))
	if content := hostA.Read("alice"); content != "# alice's own keys\n"+handLine+"\n" {
		t.Fatalf("after removing the block the file must be byte for byte what the user wrote, got:\n%q", content)
	}

	// Expiry: one key expires by the agent's own clock, then the whole grant.
	g.Spec.Suspend = false
	soon := metav1.NewTime(time.Now().Add(3 * time.Second).Truncate(time.Second)) // the API keeps whole seconds
	later := metav1.NewTime(soon.Add(2 * time.Second))
	bob := key(bobData, "bob")
	bob.ExpiresAt = &soon
	g.Spec.ExpiresAt = &later
	g.Spec.Users = []nav1.RenderedUser{{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice"), bob}}}
	apply(t, g)
	eventually(t, timeout, "both keys back", holds(hostA, "alice", true, aliceData, bobData))
	eventually(t, timeout, "bob's key expired", holds(hostA, "alice", true, aliceData))
	if time.Now().Before(soon.Time) {
		t.Fatal("bob's key was removed before its expiry")
	}
	eventually(t, timeout, "the grant expired", holds(hostA, "alice", true))
	if time.Now().Before(later.Time) {
		t.Fatal("the grant was removed before its expiry")
	}

	// Delete: recreate without expiry, then delete.
	g.Spec.ExpiresAt = nil
	g.Spec.Users = []nav1.RenderedUser{{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}}}
	apply(t, g)
	eventually(t, timeout, "key back", holds(hostA, "alice", true, aliceData))
	remove(t, "team-a")
	eventually(t, timeout, "deleted grant revoked", holds(hostA, "alice", true))

	// An agent that was down converges when it returns, and did not revoke
	// anything while it was stopping.
	apply(t, grant("team-a", map[string]string{"pool": "a"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}}))
	eventually(t, timeout, "key back", holds(hostA, "alice", true, aliceData))
	agentA.Stop(t)
	must(t, holds(hostA, "alice", true, aliceData)())
	apply(t, grant("team-a", map[string]string{"pool": "a"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(bobData, "bob")}}))
	time.Sleep(500 * time.Millisecond)
	must(t, holds(hostA, "alice", true, aliceData)()) // nobody is writing node-a now
	restarted := startAgent(t, "node-a", hostA)
	eventually(t, timeout, "restarted agent converges", holds(hostA, "alice", true, bobData))

	// Drift: a hand edit inside the block and a deleted file are both repaired,
	// and lines added outside the block survive.
	path := hostA.KeysFile("alice")
	content := hostA.Read("alice")
	tampered := strings.Replace(content, "# END nodeaccess-operator", "ssh-ed25519 "+aliceData+" sneaked-in\n# END nodeaccess-operator", 1) + "# added by alice later\n"
	must(t, os.WriteFile(path, []byte(tampered), 0o600))
	eventually(t, timeout, "hand edit inside the block repaired", func() error {
		if err := holds(hostA, "alice", true, bobData)(); err != nil {
			return err
		}
		if !strings.HasSuffix(hostA.Read("alice"), "# added by alice later\n") {
			return fmt.Errorf("line added outside the block lost")
		}
		return nil
	})
	must(t, os.Remove(path))
	eventually(t, timeout, "deleted file rewritten", holds(hostA, "alice", false, bobData))
	// The agent may be writing into .ssh as it goes: retry until it is gone.
	eventually(t, timeout, "removing .ssh", func() error { return os.RemoveAll(filepath.Dir(path)) })
	eventually(t, timeout, "deleted .ssh rewritten", holds(hostA, "alice", false, bobData))
	remove(t, "team-a")
	eventually(t, timeout, "revoked", holds(hostA, "alice", false))

	// A grant deleted while the agent is down: the new agent process has never
	// managed the account, finds the block by scanning the host's accounts,
	// and removes it.
	apply(t, grant("team-a", map[string]string{"pool": "a"}, nav1.RenderedUser{Name: "deploy", Keys: []nav1.RenderedKey{key(aliceData, "alice")}}))
	eventually(t, timeout, "deploy holds the key", holds(hostA, "deploy", false, aliceData))
	restarted.Stop(t)
	remove(t, "team-a")
	time.Sleep(500 * time.Millisecond)
	must(t, holds(hostA, "deploy", false, aliceData)()) // nobody revoked it yet
	startAgent(t, "node-a", hostA)
	eventually(t, timeout, "revoked on return", holds(hostA, "deploy", false))
}

// reportHas checks that the node's report lists g as applied with its current hash.
func reportHas(ctx context.Context, node string, g *nav1.RenderedNodeAccess) func() error {
	return func() error {
		r := &nav1.NodeAccessReport{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
			return err
		}
		for _, gr := range r.Status.Grants {
			if gr.UID == g.Spec.NodeAccessUID {
				if gr.Hash != g.Spec.Hash || !gr.Applied {
					return fmt.Errorf("report lists %+v, want hash %s applied", gr, g.Spec.Hash)
				}
				if len(r.OwnerReferences) != 1 || r.OwnerReferences[0].Kind != "Node" || r.OwnerReferences[0].Name != node {
					return fmt.Errorf("report must be owned by its Node, has %+v", r.OwnerReferences)
				}
				return nil
			}
		}
		return fmt.Errorf("report does not list %s: %+v", g.Name, r.Status)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
