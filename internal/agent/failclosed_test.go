package agent_test

// The agent reports only what it proved. These tests break accounts' files
// in the ways a node breaks them, on real files, with the agent running
// against a real API server, and read the node's report as the manager does.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

func fastAgent(node string, h *testenv.Host) agent.Config {
	return agent.Config{NodeName: node, Namespace: namespace, HostRoot: h.Root,
		Resync: time.Second, Heartbeat: 10 * time.Minute, ReportDelay: 0}
}

// grantReport returns the node's report entry for uid, or nil.
func grantReport(ctx context.Context, node, uid string) (*nav1.GrantReport, *nav1.NodeAccessReport, error) {
	r := &nav1.NodeAccessReport{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
		return nil, nil, err
	}
	for i := range r.Status.Grants {
		if r.Status.Grants[i].UID == uid {
			return &r.Status.Grants[i], r, nil
		}
	}
	return nil, r, nil
}

// possiblyHeld checks that the report lists the grant as not applied,
// possibly held in alice's account, and alice's keys as unknown.
func possiblyHeld(ctx context.Context, node, uid string) func() error {
	return func() error {
		g, r, err := grantReport(ctx, node, uid)
		if err != nil {
			return err
		}
		if g == nil || g.Applied || g.Reason != nav1.PossiblyHeldReason || !slices.Equal(g.Accounts, []string{"alice"}) {
			return fmt.Errorf("report entry %+v, want not applied, PossiblyHeld in [alice]", g)
		}
		for _, e := range r.Status.AccountErrors {
			if e.User == "alice" && e.KeysUnknown {
				return nil
			}
		}
		return fmt.Errorf("alice is not reported with unknown keys: %+v", r.Status.AccountErrors)
	}
}

func absentFromReport(ctx context.Context, node, uid string) func() error {
	return func() error {
		g, _, err := grantReport(ctx, node, uid)
		if err != nil {
			return err
		}
		if g != nil {
			return fmt.Errorf("report still lists %+v", g)
		}
		return nil
	}
}

// A revoked grant whose keys the agent cannot prove gone stays listed as
// possibly held, across passes and agent restarts, until the file can be
// read again; then the keys go and so does the entry.
func TestRevocationIsReportedOnlyWhenProven(t *testing.T) {
	breakages := []struct {
		name         string
		break_, mend func(t *testing.T, h *testenv.Host)
	}{
		{"home turned 0775",
			func(t *testing.T, h *testenv.Host) { must(t, os.Chmod(filepath.Join(h.Root, "home", "alice"), 0o775)) },
			func(t *testing.T, h *testenv.Host) { must(t, os.Chmod(filepath.Join(h.Root, "home", "alice"), 0o755)) }},
		{"file over the size limit",
			func(t *testing.T, h *testenv.Host) {
				f, err := os.OpenFile(h.KeysFile("alice"), os.O_APPEND|os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteString(strings.Repeat("# padding the user wrote\n", 9<<20/25))
				must(t, err)
				must(t, f.Close())
			},
			func(t *testing.T, h *testenv.Host) {
				content := h.Read("alice")
				replaceFile(t, h.KeysFile("alice"), []byte(content[:strings.Index(content, "# padding")]))
			}},
		{"file owner changed",
			func(t *testing.T, h *testenv.Host) { must(t, os.Chown(h.KeysFile("alice"), 1002, 1002)) },
			func(t *testing.T, h *testenv.Host) { must(t, os.Chown(h.KeysFile("alice"), 1001, 1001)) }},
	}
	for i, b := range breakages {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			node := fmt.Sprintf("node-proof-%d", i)
			pool := map[string]string{"pool": node}
			h := newHost(t)
			createNode(t, node, pool)
			stop := runAgentWith(t, fastAgent(node, h), "0")
			g := grant("proof-"+node, pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
			t.Cleanup(func() { remove(t, g.Name) })
			apply(t, g)
			eventually(t, 10*time.Second, "the key written", holds(h, "alice", true, aliceData))
			eventually(t, 10*time.Second, "the grant reported applied", reportHas(ctx, node, g))

			b.break_(t, h)
			remove(t, g.Name)
			eventually(t, 10*time.Second, "the revoked grant reported possibly held", possiblyHeld(ctx, node, g.Spec.NodeAccessUID))
			if !strings.Contains(h.Read("alice"), aliceData) {
				t.Fatal("the key left a file the agent may not touch")
			}
			// It stays so: several resyncs later, and after a restart.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				must(t, possiblyHeld(ctx, node, g.Spec.NodeAccessUID)())
				time.Sleep(100 * time.Millisecond)
			}
			stop()
			runAgentWith(t, fastAgent(node, h), "0")
			deadline = time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				must(t, possiblyHeld(ctx, node, g.Spec.NodeAccessUID)())
				time.Sleep(100 * time.Millisecond)
			}

			b.mend(t, h)
			eventually(t, 10*time.Second, "the key removed once the file is readable", holds(h, "alice", true))
			eventually(t, 10*time.Second, "the grant gone from the report", absentFromReport(ctx, node, g.Spec.NodeAccessUID))
		})
	}
}

// An agent started on a node whose report an earlier agent left, listing a
// grant without naming its account (as the released version reports), keeps
// it possibly held while any account cannot be read.
func TestUnattributedGrantFromAnEarlierAgentStaysPossiblyHeld(t *testing.T) {
	ctx := context.Background()
	const node = "node-unattributed"
	h := newHost(t)
	createNode(t, node, map[string]string{"pool": node})
	// The earlier report, as an earlier agent wrote it: a grant held on the
	// node, its account not named.
	report := &nav1.NodeAccessReport{}
	report.Name, report.Spec.NodeName = node, node
	must(t, k8sClient.Create(ctx, report))
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, report) })
	status := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": nav1.GroupVersion.String(), "kind": "NodeAccessReport", "metadata": map[string]any{"name": node},
		"status": map[string]any{"grants": []any{map[string]any{"name": "old-grant", "uid": "uid-old-grant", "keys": 1, "applied": true}}},
	}}
	must(t, k8sClient.Status().Patch(ctx, status, client.Apply, client.FieldOwner(agent.FieldOwner), client.ForceOwnership))
	must(t, os.Chmod(filepath.Join(h.Root, "home", "deploy"), 0o777)) // one home cannot be read

	runAgentWith(t, fastAgent(node, h), "0")
	eventually(t, 10*time.Second, "the earlier grant possibly held", func() error {
		g, _, err := grantReport(ctx, node, "uid-old-grant")
		if err != nil {
			return err
		}
		if g == nil || g.Applied || g.Reason != nav1.PossiblyHeldReason {
			return fmt.Errorf("entry %+v", g)
		}
		return nil
	})
	must(t, os.Chmod(filepath.Join(h.Root, "home", "deploy"), 0o755))
	eventually(t, 10*time.Second, "dropped once every account was read", absentFromReport(ctx, node, "uid-old-grant"))
}

// Keys are counted from the files: an account that failed contributes
// nothing, and the grant is not applied.
func TestReportCountsOnlyKeysInTheFiles(t *testing.T) {
	ctx := context.Background()
	const node = "node-count"
	h := newHost(t)
	createNode(t, node, map[string]string{"pool": node})
	must(t, os.Chmod(filepath.Join(h.Root, "home", "deploy"), 0o777))
	runAgentWith(t, fastAgent(node, h), "0")
	g := grant("count", map[string]string{"pool": node},
		nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}},
		nav1.RenderedUser{Name: "deploy", Keys: []nav1.RenderedKey{key(aliceData, "alice"), key(bobData, "bob")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the report counting alice's key only", func() error {
		gr, r, err := grantReport(ctx, node, g.Spec.NodeAccessUID)
		if err != nil {
			return err
		}
		if gr == nil || gr.Applied || gr.Keys != 1 || r.Status.Keys != 1 || gr.Reason != nav1.UnsafePermissionsReason {
			return fmt.Errorf("entry %+v, node keys %d; want not applied, 1 key, UnsafePermissions", gr, r.Status.Keys)
		}
		return nil
	})
}

// An account with uid 0 under another name is root: without root allowed
// its keys are removed and never written.
func TestRootUnderAnotherNameIsRoot(t *testing.T) {
	ctx := context.Background()
	const node = "node-toor"
	h := testenv.NewHost(t, testenv.Account{Name: "toor", ID: 0})
	// A block an earlier version wrote for toor.
	h.WriteKeys(t, "toor", 0, "# BEGIN nodeaccess-operator managed keys: edits between BEGIN and END are overwritten\n"+
		"# nodeaccess old uid=uid-old\nssh-ed25519 "+bobData+" bob nodeaccess=old\n# END nodeaccess-operator managed keys\n")
	createNode(t, node, map[string]string{"pool": node})
	stop := runAgentWith(t, fastAgent(node, h), "0")
	g := grant("toor", map[string]string{"pool": node}, nav1.RenderedUser{Name: "toor", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the old block removed, no key written", holds(h, "toor", false))
	eventually(t, 10*time.Second, "the grant refused as root", func() error {
		gr, _, err := grantReport(ctx, node, g.Spec.NodeAccessUID)
		if err != nil {
			return err
		}
		if gr == nil || gr.Applied || gr.Reason != nav1.RootNotAllowedReason {
			return fmt.Errorf("entry %+v, want RootNotAllowed", gr)
		}
		return nil
	})
	if h.Read("toor") != "" && strings.Contains(h.Read("toor"), aliceData) {
		t.Fatal("a key was written for uid 0")
	}
	stop()
	cfg := fastAgent(node, h)
	cfg.AllowRoot = true
	runAgentWith(t, cfg, "0")
	eventually(t, 10*time.Second, "written once root is allowed", holds(h, "toor", false, aliceData))
}

// An account shared by many grants never grows past what the agent reads
// back; what must be removed still is.
func TestFileAtTheSizeLimitStillRevokes(t *testing.T) {
	ctx := context.Background()
	const node = "node-size"
	h := newHost(t)
	createNode(t, node, map[string]string{"pool": node})
	runAgentWith(t, fastAgent(node, h), "0")
	pool := map[string]string{"pool": node}
	old := grant("size-old", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(bobData, "bob")}})
	t.Cleanup(func() { remove(t, old.Name) })
	apply(t, old)
	eventually(t, 10*time.Second, "the old key written", holds(h, "alice", true, bobData))

	// The user's own lines take the file to a few hundred bytes under the limit.
	content := h.Read("alice")
	pad := 8<<20 - len(content) - 300
	// Saved as an editor saves, by rename: a write in place (truncate, then
	// write) seen by a pass between the two would read as an empty file.
	replaceFile(t, h.KeysFile("alice"), []byte(content+strings.Repeat("#", pad-1)+"\n"))
	big := nav1.RenderedKey{Type: "ssh-rsa", Data: strings.Repeat("QUFBQ", 200) + "A", Comment: "big"}
	grown := grant("size-new", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{big}})
	t.Cleanup(func() { remove(t, grown.Name) })
	apply(t, grown)
	remove(t, old.Name)
	eventually(t, 10*time.Second, "the old key removed, the new one not written", holds(h, "alice", true))
	eventually(t, 10*time.Second, "the new grant refused as too large", func() error {
		gr, _, err := grantReport(ctx, node, grown.Spec.NodeAccessUID)
		if err != nil {
			return err
		}
		if gr == nil || gr.Applied || gr.Reason != nav1.FileTooLargeReason {
			return fmt.Errorf("entry %+v, want FileTooLarge", gr)
		}
		return nil
	})
	eventually(t, 10*time.Second, "the old grant gone", absentFromReport(ctx, node, old.Spec.NodeAccessUID))
	if len(h.Read("alice")) > 8<<20 {
		t.Fatal("the file grew past the limit")
	}
}

// replaceFile replaces path with content by rename, keeping its owner and
// mode, as an editor saving the file does.
func replaceFile(t *testing.T, path string, content []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	tmp := path + ".saving"
	must(t, os.WriteFile(tmp, content, fi.Mode().Perm()))
	st := fi.Sys().(*syscall.Stat_t)
	must(t, os.Chown(tmp, int(st.Uid), int(st.Gid)))
	must(t, os.Rename(tmp, path))
}
