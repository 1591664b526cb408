// Package manifests tests the manifests the project ships (kustomize build
// config/default): least-privilege RBAC, the manager's pod security, and the
// policy that binds each agent to its own node's report, enforced by a real
// kube-apiserver.
package manifests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const namespace = "nodeaccess-system"

// build returns the objects of `kustomize build config/default`.
func build(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command("go", "tool", "kustomize", "build", "config/default")
	cmd.Dir = testenv.RepoRoot()
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build: %v\n%s", err, stderr.String())
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(&out, 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	if len(objs) < 10 {
		t.Fatalf("kustomize built only %d objects", len(objs))
	}
	return objs
}

func of(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if slices.Contains(kinds, o.GetKind()) {
			out = append(out, o)
		}
	}
	return out
}

func rules(t *testing.T, o *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var role rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

func TestRBACIsLeastPrivilege(t *testing.T) {
	objs := build(t)
	roles := of(objs, "ClusterRole", "Role")
	byName := map[string][]rbacv1.PolicyRule{}
	for _, r := range roles {
		byName[r.GetKind()+"/"+r.GetName()] = rules(t, r)
		for _, rule := range byName[r.GetKind()+"/"+r.GetName()] {
			for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.NonResourceURLs} {
				if slices.Contains(list, "*") {
					t.Errorf("%s %s has a wildcard: %+v", r.GetKind(), r.GetName(), rule)
				}
			}
		}
	}
	can := func(role, group, resource string, verbs ...string) bool {
		for _, rule := range byName[role] {
			if slices.Contains(rule.APIGroups, group) && slices.Contains(rule.Resources, resource) {
				for _, v := range verbs {
					if slices.Contains(rule.Verbs, v) {
						return true
					}
				}
			}
		}
		return false
	}
	writes := []string{"create", "update", "patch", "delete", "deletecollection"}
	for _, agentRole := range []string{"ClusterRole/nodeaccess-agent-role", "Role/nodeaccess-agent-role"} {
		if _, ok := byName[agentRole]; !ok {
			t.Fatalf("%s not shipped", agentRole)
		}
		if can(agentRole, "", "secrets", "get", "list", "watch") {
			t.Errorf("%s can read secrets", agentRole)
		}
		// Of ConfigMaps, only the watch filter's vocabulary, in the operator's namespace.
		for _, rule := range byName[agentRole] {
			if slices.Contains(rule.Resources, "configmaps") &&
				(agentRole != "Role/nodeaccess-agent-role" || !slices.Equal(rule.ResourceNames, []string{"nodeaccess-node-filter"}) ||
					slices.ContainsFunc(rule.Verbs, func(v string) bool { return slices.Contains(writes, v) })) {
				t.Errorf("%s reaches ConfigMaps beyond reading nodeaccess-node-filter: %+v", agentRole, rule)
			}
		}
		if can(agentRole, "nodeaccess.io", "nodeaccesses", append(writes, "get", "list", "watch")...) {
			t.Errorf("%s can reach NodeAccess objects", agentRole)
		}
		if can(agentRole, "", "nodes", writes...) {
			t.Errorf("%s can write nodes", agentRole)
		}
	}
	for _, managerRole := range []string{"ClusterRole/nodeaccess-manager-role", "Role/nodeaccess-manager-role"} {
		for _, res := range []string{"secrets", "configmaps", "nodes"} {
			// The one exception: the watch filter's vocabulary, a ConfigMap
			// of the operator's own namespace.
			if can(managerRole, "", res, writes...) && (managerRole != "Role/nodeaccess-manager-role" || res != "configmaps") {
				t.Errorf("%s can write %s", managerRole, res)
			}
		}
	}
	// No cluster-wide read of Secrets: a namespace opts in by binding the
	// key-source reader; ConfigMaps (public keys) stay readable.
	for _, managerRole := range []string{"ClusterRole/nodeaccess-manager-role", "Role/nodeaccess-manager-role"} {
		if can(managerRole, "", "secrets", "get", "list", "watch") {
			t.Errorf("%s can read Secrets; namespaces must opt in instead", managerRole)
		}
	}
	if !can("ClusterRole/nodeaccess-manager-role", "", "configmaps", "get") {
		t.Error("the manager must be able to read ConfigMap key sources")
	}
	reader := byName["ClusterRole/nodeaccess-key-source-reader"]
	if len(reader) != 1 || !slices.Equal(reader[0].Resources, []string{"secrets"}) || slices.ContainsFunc(reader[0].Verbs, func(v string) bool { return slices.Contains(writes, v) }) {
		t.Errorf("the key-source reader must read Secrets and nothing else: %+v", reader)
	}
	// Teams' roles reach NodeAccess objects only.
	for _, team := range []string{"ClusterRole/nodeaccess-editor", "ClusterRole/nodeaccess-viewer"} {
		for _, rule := range byName[team] {
			if !slices.Equal(rule.APIGroups, []string{"nodeaccess.io"}) {
				t.Errorf("%s reaches beyond nodeaccess.io: %+v", team, rule)
			}
		}
	}
	if can("ClusterRole/nodeaccess-viewer", "nodeaccess.io", "nodeaccesses", writes...) {
		t.Error("the viewer role can write")
	}
}

func TestManagerPodPassesRestricted(t *testing.T) {
	deployments := of(build(t), "Deployment")
	if len(deployments) != 1 {
		t.Fatalf("want one Deployment, got %d", len(deployments))
	}
	var pod corev1.PodTemplateSpec
	tmpl, _, _ := unstructured.NestedMap(deployments[0].Object, "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &pod); err != nil {
		t.Fatal(err)
	}
	spec := pod.Spec
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot ||
		spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", spec.SecurityContext)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("the manager shares a host namespace")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("the manager mounts a host path: %s", v.HostPath.Path)
		}
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || (sc.Privileged != nil && *sc.Privileged) {
			t.Errorf("container %s security context %+v is not restricted", c.Name, sc)
		}
		var agentImage bool
		for _, e := range c.Env {
			agentImage = agentImage || e.Name == "RELATED_IMAGE_AGENT"
		}
		if !agentImage {
			t.Errorf("container %s has no RELATED_IMAGE_AGENT", c.Name)
		}
	}
}

// TestAgentsWriteOnlyTheirOwnReport applies the shipped RBAC and the policy
// the manager creates (agentdaemonset.ReportPolicy) to a real API server and
// acts as two agents, with tokens bound to pods on two nodes.
func TestAgentsWriteOnlyTheirOwnReport(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	applyShipped(t, admin)
	policy, binding := agentdaemonset.ReportPolicy(namespace)
	for _, o := range []client.Object{policy, binding} {
		must(t, admin.Create(ctx, o))
		t.Cleanup(func() { _ = admin.Delete(ctx, o) })
	}

	// Two nodes, an agent pod on each.
	pods := map[string]*corev1.Pod{}
	for _, node := range []string{"node-a", "node-b"} {
		must(t, admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}))
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node, Namespace: namespace},
			Spec: corev1.PodSpec{
				NodeName: node, ServiceAccountName: "nodeaccess-agent",
				Containers: []corev1.Container{{Name: "agent", Image: "example.com/agent"}},
			},
		}
		must(t, admin.Create(ctx, pod))
		pods[node] = pod
	}
	clientset, err := kubernetes.NewForConfig(env.Config)
	must(t, err)
	tokenFor := func(pod *corev1.Pod) string {
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(600))}}
		if pod != nil {
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		tr, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "nodeaccess-agent", req, metav1.CreateOptions{})
		must(t, err)
		return tr.Status.Token
	}
	as := func(token string) client.Client {
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = token
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		must(t, err)
		return c
	}
	agentA := as(tokenFor(pods["node-a"]))
	unbound := as(tokenFor(nil))

	report := func(name string) *nav1.NodeAccessReport {
		return &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: nav1.NodeAccessReportSpec{NodeName: name}}
	}
	// The policy is in force once the API server has loaded it.
	testenv.Eventually(t, 20*time.Second, "policy denies another node's report", func() error {
		err := agentA.Create(ctx, report("node-b"))
		if err == nil {
			_ = admin.Delete(ctx, report("node-b"))
			return fmt.Errorf("agent on node-a created node-b's report")
		}
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only the report of its own node (node-a)") {
			return fmt.Errorf("unexpected refusal: %v", err)
		}
		return nil
	})

	// Its own report: create and status update are allowed.
	own := report("node-a")
	must(t, agentA.Create(ctx, own))
	patch := client.MergeFrom(own.DeepCopy())
	own.Status.Keys = 3
	must(t, agentA.Status().Patch(ctx, own, patch))

	// Another node's existing report: update refused.
	other := report("node-b")
	must(t, admin.Create(ctx, other))
	patch = client.MergeFrom(other.DeepCopy())
	other.Status.Keys = 99
	if err := agentA.Status().Patch(ctx, other, patch); err == nil || !strings.Contains(err.Error(), "only the report of its own node") {
		t.Fatalf("agent on node-a updated node-b's report: %v", err)
	}
	// A token not bound to a pod names no node: refused.
	if err := unbound.Create(ctx, report("node-c")); err == nil || !strings.Contains(err.Error(), "token bound to its pod") {
		t.Fatalf("an unbound agent token wrote a report: %v", err)
	}

	// And RBAC: no Secrets, no ConfigMaps, no NodeAccess objects.
	for _, list := range []client.ObjectList{&corev1.SecretList{}, &corev1.ConfigMapList{}, &nav1.NodeAccessList{}} {
		if err := agentA.List(ctx, list, client.InNamespace(namespace)); !apierrors.IsForbidden(err) {
			t.Errorf("agent listed %T: %v", list, err)
		}
	}
	var rendered nav1.RenderedNodeAccessList
	must(t, agentA.List(ctx, &rendered, client.InNamespace(namespace)))
	if err := agentA.List(ctx, &rendered, client.InNamespace("default")); !apierrors.IsForbidden(err) {
		t.Errorf("agent listed rendered grants outside the operator namespace: %v", err)
	}
}

// applyShipped applies the shipped namespace, accounts, roles, bindings and policies.
func applyShipped(t *testing.T, admin client.Client) {
	t.Helper()
	for _, o := range of(build(t), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding") {
		must(t, admin.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("test"), client.ForceOwnership))
	}
}

func adminClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	must(t, err)
	return c
}

// teamPolicy is the example of config/samples/team-policy made for a team,
// as its comment says to: group, pool, accounts and namespace replaced.
func teamPolicy(t *testing.T, team, pool, namespace string, accounts ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(testenv.RepoRoot() + "/config/samples/team-policy/team-payments-policy.yaml")
	must(t, err)
	s := string(data)
	quoted := make([]string, len(accounts))
	for i, a := range accounts {
		quoted[i] = "'" + a + "'"
	}
	for _, r := range [][2]string{
		{"['deploy', 'payments-ops']", "[" + strings.Join(quoted, ", ") + "]"},
		{"the accounts deploy and payments-ops", "the accounts " + strings.Join(accounts, " and ")},
		{"team-payments", team}, {"== 'payments'", "== '" + pool + "'"}, {"pool=payments", "pool=" + pool},
		{"the payments team", "the " + pool + " team"},
	} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	if team != "team-payments" {
		s = strings.ReplaceAll(s, "namespace == '"+team+"'", "namespace == '"+namespace+"'")
	}
	return []byte(s)
}

// TestTeamPolicyExample proves the example in config/samples/team-policy on
// a real API server, across two teams: each may create, change and delete
// only its own NodeAccess objects, for its own pool (by a label a kubelet
// cannot set on itself), accounts and key namespace, within sizes; each
// refusal carries the message the user sees. Cluster admins are not
// constrained.
func TestTeamPolicyExample(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	applyShipped(t, admin)
	for _, doc := range [][]byte{
		teamPolicy(t, "team-payments", "payments", "team-payments", "deploy", "payments-ops"),
		teamPolicy(t, "team-data", "data", "team-data", "analyst"),
	} {
		must(t, localcluster.ApplyYAML(ctx, admin, doc, nil))
	}
	as := func(user, group string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{group, "system:authenticated"}}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		must(t, err)
		return c
	}
	payments, data := as("pat", "team-payments"), as("dana", "team-data")
	end := metav1.NewTime(time.Now().Add(24 * time.Hour).Truncate(time.Second))
	grant := func(name string, labels map[string]string, user string) *nav1.NodeAccess {
		return &nav1.NodeAccess{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: nav1.NodeAccessSpec{
				NodeSelector: metav1.LabelSelector{MatchLabels: labels},
				ExpiresAt:    &end,
				Users: []nav1.UserAccess{{Name: user, Keys: []nav1.AuthorizedKey{{
					Key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq alice",
				}}}},
			},
		}
	}
	pool := func(p string) map[string]string { return map[string]string{"node-restriction.kubernetes.io/pool": p} }
	refused := func(what string, err error, message string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed", what)
		} else if !strings.Contains(err.Error(), message) {
			t.Errorf("%s: refused with %q, want a message containing %q", what, err, message)
		}
	}

	// The policies take a moment to be in force: wait for the first refusal.
	testenv.Eventually(t, 20*time.Second, "policy in force", func() error {
		g := grant("payments-on-data", pool("data"), "deploy")
		if err := payments.Create(ctx, g); err == nil {
			_ = admin.Delete(ctx, g)
			return fmt.Errorf("not yet")
		}
		return nil
	})
	const onlyPool = "the payments team may select only nodes labelled node-restriction.kubernetes.io/pool=payments"
	refused("another team's pool", payments.Create(ctx, grant("p1", pool("data"), "deploy")), onlyPool)
	refused("a label the kubelet can set", payments.Create(ctx, grant("p2", map[string]string{"pool": "payments"}, "deploy")), onlyPool)
	refused("an extra kubelet-settable label", payments.Create(ctx, grant("p3", map[string]string{"node-restriction.kubernetes.io/pool": "payments", "zone": "a"}, "deploy")), onlyPool)
	broad := grant("p4", pool("payments"), "deploy")
	broad.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: metav1.LabelSelectorOpDoesNotExist}}
	refused("matchExpressions", payments.Create(ctx, broad), onlyPool)
	refused("root", payments.Create(ctx, grant("p5", pool("payments"), "root")), "the payments team may grant only the accounts deploy and payments-ops")
	foreign := grant("p6", pool("payments"), "deploy")
	foreign.Spec.Users[0].KeysFrom = []nav1.KeySource{{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "team-data", Name: "keys", Key: "k"}}}
	refused("keys from another team's Secret", payments.Create(ctx, foreign), "may read keys only from Secrets and ConfigMaps in its namespace team-payments")
	many := grant("p7", pool("payments"), "deploy")
	for range 20 {
		many.Spec.Users[0].Keys = append(many.Spec.Users[0].Keys, many.Spec.Users[0].Keys[0])
	}
	refused("21 inline keys", payments.Create(ctx, many), "at most 20 inline keys and 2 key sources per account")
	forever := grant("p8", pool("payments"), "deploy")
	forever.Spec.ExpiresAt = nil
	refused("no expiry", payments.Create(ctx, forever), "grants must expire")

	// Each team's own grant is allowed.
	own := grant("payments-deploy", pool("payments"), "deploy")
	must(t, payments.Create(ctx, own))
	theirs := grant("data-analyst", pool("data"), "analyst")
	must(t, data.Create(ctx, theirs))

	// Neither can take over, widen or delete the other's; nor widen its own.
	must(t, admin.Get(ctx, client.ObjectKeyFromObject(own), own))
	takeover := own.DeepCopy()
	takeover.Spec.NodeSelector.MatchLabels = pool("data")
	takeover.Spec.Users[0].Name = "analyst"
	refused("data takes over payments' grant", data.Update(ctx, takeover), "the data team may change or delete only its own NodeAccess objects")
	refused("data deletes payments' grant", data.Delete(ctx, own.DeepCopy()), "the data team may change or delete only its own NodeAccess objects")
	widened := own.DeepCopy()
	widened.Spec.NodeSelector = metav1.LabelSelector{}
	refused("payments widens its own grant to every node", payments.Update(ctx, widened), onlyPool)
	moved := own.DeepCopy()
	moved.Spec.NodeSelector.MatchLabels = pool("data")
	refused("payments moves its grant into data's pool", payments.Update(ctx, moved), onlyPool)

	// Its own changes and deletion are allowed.
	must(t, admin.Get(ctx, client.ObjectKeyFromObject(own), own))
	own.Spec.Users[0].Name = "payments-ops"
	must(t, payments.Update(ctx, own))
	must(t, payments.Delete(ctx, own))

	// An admin is not constrained.
	adminGrant := grant("admin-anything", map[string]string{"pool": "gpu"}, "root")
	adminGrant.Spec.ExpiresAt = nil
	must(t, admin.Create(ctx, adminGrant))
	must(t, admin.Delete(ctx, theirs))
}

func ptrTo[T any](v T) *T { return &v }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	env    *testenv.Env
	scheme = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// kustomize runs from the repository root; go must be on PATH, as for make.
	if _, err := exec.LookPath("go"); err != nil {
		fmt.Fprintln(os.Stderr, "go is not on PATH")
		return 1
	}
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	return m.Run()
}
