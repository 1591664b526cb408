package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

func TestSSHDAddress(t *testing.T) {
	for _, tc := range []struct {
		host    string
		port    int
		want    string
		wantErr bool
	}{
		{"10.0.0.5", 22, "10.0.0.5:22", false},
		{"fd00::5", 2222, "[fd00::5]:2222", false},
		{"node-a.example.com", 22, "node-a.example.com:22", false},
		{"", 22, "", false},
		{"10.0.0.5", 0, "", false},
		{"10.0.0.5", 70000, "", true},
		{"10.0.0.5 -oProxyCommand=x", 22, "", true},
		{"a\nb", 22, "", true},
	} {
		got, err := agent.SSHDAddress(tc.host, tc.port)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("SSHDAddress(%q, %d) = %q, %v; want %q, error %v", tc.host, tc.port, got, err, tc.want, tc.wantErr)
		}
	}
}

// The agent publishes its node's sshd host keys in the report, writes
// nothing while they stay the same, follows a replaced key without keeping
// the old one, and says why when sshd is gone.
func TestReportCarriesTheNodesSSHDHostKeys(t *testing.T) {
	ctx := context.Background()
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostKeyTypes: []string{"ed25519", "ecdsa"}})
	h := newHost(t)
	createNode(t, "node-sshd", map[string]string{"pool": "sshd"})

	// Count the agent's writes.
	var writes atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				writes.Add(1)
			}
			return rt.RoundTrip(req)
		})
	}
	const resync = time.Second
	runAgentOn(t, cfg, agent.Config{
		NodeName: "node-sshd", Namespace: namespace, HostRoot: h.Root,
		Resync: resync, Heartbeat: 10 * time.Minute, SSHDAddress: sshd.Addr(),
	}, "0")

	hostKeys := func(want ...string) func() error {
		return func() error {
			st, err := sshdOf(ctx, "node-sshd")
			if err != nil {
				return err
			}
			var got []string
			for _, k := range st.HostKeys {
				got = append(got, k.Type+" "+k.Key+" "+k.Fingerprint)
			}
			if st.Reason != "" || !slices.Equal(got, want) {
				return fmt.Errorf("sshd %+v; want keys %v", st, want)
			}
			return nil
		}
	}
	expected := func() []string {
		var want []string
		for _, typ := range []string{"ed25519", "ecdsa"} {
			pub, fp := sshd.HostKey(t, typ)
			f := strings.Fields(pub)
			want = append(want, f[0]+" "+f[1]+" "+fp)
		}
		return want
	}
	first := expected()
	testenv.Eventually(t, 30*time.Second, "the report lists the host keys", hostKeys(first...))
	st, err := sshdOf(ctx, "node-sshd")
	must(t, err)
	if st.Address != sshd.Addr() || !strings.HasPrefix(st.Version, "SSH-2.0-OpenSSH_") || st.LastChangeTime == nil {
		t.Errorf("sshd %+v: want address %s, OpenSSH's version and a time", st, sshd.Addr())
	}

	// Steady state: probes go on, once per resync (each probe is one
	// connection per key family: ed25519, ecdsa, rsa), and nothing is written.
	before, probesBefore := writes.Load(), connections(sshd)
	testenv.Eventually(t, 20*time.Second, "two more probes", func() error {
		if n := connections(sshd) - probesBefore; n < 6 {
			return fmt.Errorf("%d connections since", n)
		}
		return nil
	})
	if n := writes.Load() - before; n != 0 {
		t.Errorf("the agent wrote %d times while nothing changed", n)
	}

	// A re-provisioned node: new host keys. The report follows, and the
	// old keys are gone from it.
	sshd.ReplaceHostKeys(t)
	second := expected()
	testenv.Eventually(t, 30*time.Second, "the report lists the new host keys", hostKeys(second...))
	if slices.Equal(first, second) {
		t.Fatal("the host keys did not change")
	}

	// sshd gone: no key is published, and the reason says why.
	sshd.Stop()
	testenv.Eventually(t, 30*time.Second, "the report says sshd is unreachable", func() error {
		st, err := sshdOf(ctx, "node-sshd")
		if err != nil {
			return err
		}
		if st.Reason != nav1.SSHDUnreachableReason || len(st.HostKeys) != 0 || !strings.Contains(st.Message, "connection refused") {
			return fmt.Errorf("sshd %+v", st)
		}
		return nil
	})
}

func sshdOf(ctx context.Context, node string) (*nav1.SSHDStatus, error) {
	rep := &nav1.NodeAccessReport{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, rep); err != nil {
		return nil, err
	}
	if rep.Status.SSHD == nil {
		return nil, fmt.Errorf("no sshd in the report yet")
	}
	return rep.Status.SSHD, nil
}

// connections counts the connections sshd logged.
func connections(s *testenv.SSHD) int {
	return strings.Count(s.Log(), "Connection from ")
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
