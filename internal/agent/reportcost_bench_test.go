package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

// BenchmarkReportWrite writes node reports of 10 grants as an agent
// writes its report under churn (a forced server-side apply of the
// status, a grant's generation and hash new each time), over 100 nodes,
// and reports the API server's CPU per write (apiserver-ms/op, from
// /proc): what each report write costs the control plane.
func BenchmarkReportWrite(b *testing.B) {
	ctx := context.Background()
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion, cfg.APIPath, cfg.ContentType = &nav1.GroupVersion, "/apis", "application/json"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	cfg.QPS, cfg.Burst = -1, 0
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	const nodes = 100
	apply := func(node string, body map[string]any, sub ...string) {
		b.Helper()
		body["apiVersion"], body["kind"] = nav1.GroupVersion.String(), "NodeAccessReport"
		body["metadata"] = map[string]any{"name": node}
		data, err := json.Marshal(body)
		if err != nil {
			b.Fatal(err)
		}
		req := rc.Patch(types.ApplyPatchType).Resource("nodeaccessreports").Name(node).SubResource(sub...)
		if err := req.Param("fieldManager", agent.FieldOwner).Param("force", "true").Body(data).Do(ctx).Error(); err != nil {
			b.Fatal(err)
		}
	}
	gen := int64(0)
	write := func(i int) {
		gen++
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		st := nav1.NodeAccessReportStatus{Keys: 200, ExpiryEnforcedBy: nav1.ExpiryBySSHDAndAgent, LastChangeTime: &now, HeartbeatTime: &now,
			Conditions: []metav1.Condition{{Type: nav1.ReadyCondition, Status: metav1.ConditionTrue, Reason: nav1.AllNodesInSyncReason, LastTransitionTime: now}},
			SSHD:       &nav1.SSHDStatus{Address: "127.0.0.1:22", HostKeys: []nav1.SSHHostKey{{Type: "ssh-ed25519", Key: aliceData, Fingerprint: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}}}}
		for g := range 10 {
			st.Grants = append(st.Grants, nav1.GrantReport{Name: fmt.Sprintf("team-%04d", g), UID: fmt.Sprintf("0b5e4c2a-6f1d-4e7b-9c3a-%012d", g),
				Generation: gen, Hash: fmt.Sprintf("%064d", gen), Keys: 20, Applied: true, Accounts: []string{"alice"}})
		}
		apply(fmt.Sprintf("report-cost-%d", i%nodes), map[string]any{"status": st}, "status")
	}
	for i := range nodes {
		node := fmt.Sprintf("report-cost-%d", i)
		apply(node, map[string]any{"spec": map[string]any{"nodeName": node}})
		b.Cleanup(func() {
			_ = k8sClient.Delete(ctx, &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}})
		})
		write(i)
	}
	start := apiServerCPU(b)
	i := 0
	for b.Loop() {
		write(i)
		i++
	}
	b.ReportMetric((apiServerCPU(b)-start)*1000/float64(b.N), "apiserver-ms/op")
}

// apiServerCPU is the user and system CPU seconds of the test's
// kube-apiserver (a child of this process).
func apiServerCPU(b *testing.B) float64 {
	b.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(data)
		end := strings.LastIndexByte(s, ')')
		if end < 0 || !strings.HasSuffix(s[:end], "(kube-apiserver") {
			continue
		}
		f := strings.Fields(s[end+2:])
		if ppid, _ := strconv.Atoi(f[1]); ppid != os.Getpid() {
			continue
		}
		user, _ := strconv.ParseFloat(f[11], 64)
		sys, _ := strconv.ParseFloat(f[12], 64)
		return (user + sys) / 100 // clock ticks: USER_HZ is 100 on Linux
	}
	b.Fatal("no kube-apiserver child of this process")
	return 0
}
