package v1alpha1_test

// These tests run against a real kube-apiserver and etcd with the generated
// CRD installed: they prove what the schema and its CEL rules accept and
// refuse, and what `kubectl explain` and `kubectl get` show a user.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	aliceKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq alice@laptop"
	carolKey = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNKamh/mDYwnbmUXRo5FbAwKxnLLPQ+DPzhNoZJ+GRz4X6jz/ykiBhzC53JErS+p8a0H3NI1bpe2QgZks/81UAE= carol"
)

var (
	env       *testenv.Env
	k8sClient client.Client
	kubeconf  string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	env, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping control plane:", err)
		}
	}()
	scheme := runtime.NewScheme()
	if err := nav1.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "nodeaccess-api-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if kubeconf, err = env.KubeconfigFile(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// validNodeAccess is the smallest object every rule accepts.
func validNodeAccess(name string) *nav1.NodeAccess {
	return &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
			Users: []nav1.UserAccess{{
				Name: "deploy",
				Keys: []nav1.AuthorizedKey{{Key: aliceKey}},
			}},
		},
	}
}

// fullNodeAccess uses every field of the spec.
func fullNodeAccess(name string) *nav1.NodeAccess {
	grantEnd := metav1.NewTime(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	keyEnd := metav1.NewTime(time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC))
	return &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{
				MatchLabels: map[string]string{"node.example.com/pool": "gpu"},
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
					{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
				},
			},
			ExpiresAt: &grantEnd,
			Suspend:   true,
			Users: []nav1.UserAccess{
				{
					Name:    "analyst",
					Options: &nav1.KeyOptions{NoAgentForwarding: true, NoX11Forwarding: true},
					Keys: []nav1.AuthorizedKey{
						{Key: aliceKey, Comment: "alice (on call)"},
						{
							Key: carolKey, Comment: "carol", ExpiresAt: &keyEnd,
							Options: &nav1.KeyOptions{
								From:     []string{"10.0.0.0/8", "!10.9.9.9", "*.corp.example"},
								Command:  "/usr/bin/rsync --server -vlogDtpre.iLsfxC . /srv/backup",
								Restrict: true, NoPortForwarding: true, NoAgentForwarding: true,
								NoX11Forwarding: true, NoPTY: true, NoUserRC: true,
							},
						},
					},
					KeysFrom: []nav1.KeySource{
						{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "team-data", Name: "ssh-keys", Key: "authorized_keys"}},
						{
							ConfigMapKeyRef: &nav1.ObjectKeySelector{Namespace: "team-data", Name: "oncall.keys", Key: "keys.pub"},
							Options:         &nav1.KeyOptions{NoPTY: true},
						},
					},
				},
				{Name: "_svc-backup", KeysFrom: []nav1.KeySource{{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "backup", Name: "k", Key: "k"}}}},
			},
		},
	}
}

func TestValidObjectsRoundTrip(t *testing.T) {
	ctx := context.Background()
	objs := []*nav1.NodeAccess{validNodeAccess("minimal"), fullNodeAccess("full")}
	samples, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "nodeaccess_*.yaml"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("finding samples: %v (%d found)", err, len(samples))
	}
	for _, path := range samples {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		obj := &nav1.NodeAccess{}
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Fatalf("decoding %s: %v", path, err)
		}
		objs = append(objs, obj)
	}
	for _, obj := range objs {
		t.Run(obj.Name, func(t *testing.T) {
			want := obj.Spec.DeepCopy()
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatalf("creating a valid NodeAccess was refused: %v", err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
			got := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(*want, got.Spec) {
				t.Fatalf("spec did not round-trip:\nsent %+v\ngot  %+v", *want, got.Spec)
			}
		})
	}
}

func TestStatusRoundTripsThroughSubresource(t *testing.T) {
	ctx := context.Background()
	obj := validNodeAccess("status-roundtrip")
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
	next := metav1.NewTime(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	obj.Status = nav1.NodeAccessStatus{
		ObservedGeneration: obj.Generation,
		SelectedNodes:      3, NodesInSync: 2, KeysGranted: 1, NextExpiry: &next,
		Conditions: []metav1.Condition{{
			Type: nav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: nav1.NodesFailingReason,
			Message: "1 of 3 nodes failed", LastTransitionTime: metav1.Now(), ObservedGeneration: obj.Generation,
		}},
		FailingNodes: []nav1.NodeFailure{{Node: "node-3", Reason: "UserNotFound", Message: "no account deploy"}},
		RefusedKeys:  []nav1.KeyRefusal{{User: "deploy", Source: "keys[1]", Reason: "WeakKey", Message: "RSA 1024 bits"}},
	}
	want := obj.Status.DeepCopy()
	if err := k8sClient.Status().Update(ctx, obj); err != nil {
		t.Fatalf("status update refused: %v", err)
	}
	got := &nav1.NodeAccess{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(want.FailingNodes, got.Status.FailingNodes) ||
		!equality.Semantic.DeepEqual(want.RefusedKeys, got.Status.RefusedKeys) ||
		got.Status.NodesInSync != 2 || got.Status.KeysGranted != 1 || len(got.Status.Conditions) != 1 {
		t.Fatalf("status did not round-trip: %+v", got.Status)
	}

	// A spec update through the main resource leaves status alone.
	got.Spec.Suspend = true
	got.Status = nav1.NodeAccessStatus{}
	if err := k8sClient.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.NodesInSync != 2 {
		t.Fatalf("spec update changed status: %+v", got.Status)
	}
}

// keyPatternMsg is how the API server refuses a key line that is not
// "<type> <base64> [comment]" on a single line.
const keyPatternMsg = "spec.users[0].keys[0].key in body should match '^(ssh-|ecdsa-|sk-)"

// schemaCase is one invalid shape and a part of the message the API server
// must answer with.
type schemaCase struct {
	name   string
	mutate func(na *nav1.NodeAccess)
	want   string
}

func TestSchemaRefusesInvalidSpecs(t *testing.T) {
	ctx := context.Background()
	laterKey := metav1.NewTime(time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC))
	earlierGrant := metav1.NewTime(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	user := func(na *nav1.NodeAccess) *nav1.UserAccess { return &na.Spec.Users[0] }
	key := func(na *nav1.NodeAccess) *nav1.AuthorizedKey { return &na.Spec.Users[0].Keys[0] }
	secretRef := func(ns, name, k string) nav1.KeySource {
		return nav1.KeySource{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: ns, Name: name, Key: k}}
	}
	manyUsers := func(n int) []nav1.UserAccess {
		users := make([]nav1.UserAccess, n)
		for i := range users {
			users[i] = nav1.UserAccess{Name: fmt.Sprintf("u%d", i), Keys: []nav1.AuthorizedKey{{Key: aliceKey}}}
		}
		return users
	}

	cases := []schemaCase{
		// nodeSelector
		{"selector operator unknown", func(na *nav1.NodeAccess) {
			na.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "pool", Operator: "Equals", Values: []string{"a"}}}
		}, "matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"},
		{"selector In without values", func(na *nav1.NodeAccess) {
			na.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpIn}}
		}, "matchExpressions values must be non-empty for In and NotIn"},
		{"selector Exists with values", func(na *nav1.NodeAccess) {
			na.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpExists, Values: []string{"a"}}}
		}, "and empty for Exists and DoesNotExist"},
		// users
		{"no users", func(na *nav1.NodeAccess) { na.Spec.Users = nil }, "spec.users: Required value"},
		{"too many users", func(na *nav1.NodeAccess) { na.Spec.Users = manyUsers(nav1.MaxUsers + 1) }, "spec.users: Too many: 33: must have at most 32 items"},
		{"duplicate user", func(na *nav1.NodeAccess) {
			na.Spec.Users = append(na.Spec.Users, *na.Spec.Users[0].DeepCopy())
		}, `spec.users[1]: Duplicate value: {"name":"deploy"}`},
		{"user name with path", func(na *nav1.NodeAccess) { user(na).Name = "../x" }, `spec.users[0].name: Invalid value: "../x": spec.users[0].name in body should match`},
		{"user name upper case", func(na *nav1.NodeAccess) { user(na).Name = "Alice" }, `spec.users[0].name in body should match '^[a-z_][a-z0-9_-]*$'`},
		{"user name too long", func(na *nav1.NodeAccess) { user(na).Name = strings.Repeat("a", 33) }, "spec.users[0].name: Too long: may not be more than 32 bytes"},
		{"user without keys", func(na *nav1.NodeAccess) { user(na).Keys = nil }, "spec.users[0]: Invalid value: each user needs at least one entry in keys or keysFrom"},
		{"too many keys", func(na *nav1.NodeAccess) {
			user(na).Keys = make([]nav1.AuthorizedKey, nav1.MaxKeysPerUser+1)
			for i := range user(na).Keys {
				user(na).Keys[i].Key = aliceKey
			}
		}, "spec.users[0].keys: Too many: 257: must have at most 256 items"},
		// keys
		{"key with newline", func(na *nav1.NodeAccess) { key(na).Key = aliceKey + "\nssh-ed25519 AAAA evil" }, keyPatternMsg},
		{"key with carriage return", func(na *nav1.NodeAccess) { key(na).Key = aliceKey + "\r" }, keyPatternMsg},
		{"key with options prefix", func(na *nav1.NodeAccess) { key(na).Key = `command="/bin/sh" ` + aliceKey }, keyPatternMsg},
		{"key that is not a key", func(na *nav1.NodeAccess) { key(na).Key = "hello world" }, keyPatternMsg},
		{"empty key", func(na *nav1.NodeAccess) { key(na).Key = "" }, "spec.users[0].keys[0].key: Invalid value: \"\": spec.users[0].keys[0].key in body should be at least 1 chars long"},
		{"key too long", func(na *nav1.NodeAccess) { key(na).Key = "ssh-rsa " + strings.Repeat("A", nav1.MaxKeyLength) }, "spec.users[0].keys[0].key: Too long: may not be more than 8192 bytes"},
		{"comment with control character", func(na *nav1.NodeAccess) { key(na).Comment = "alice\x1b[2J" }, "spec.users[0].keys[0].comment in body should match"},
		{"comment too long", func(na *nav1.NodeAccess) { key(na).Comment = strings.Repeat("c", 257) }, "spec.users[0].keys[0].comment: Too long: may not be more than 256 bytes"},
		{"key expires after grant", func(na *nav1.NodeAccess) {
			na.Spec.ExpiresAt = &earlierGrant
			key(na).ExpiresAt = &laterKey
		}, "a key's expiresAt must not be later than the grant's expiresAt"},
		// keysFrom
		{"key source with both refs", func(na *nav1.NodeAccess) {
			src := secretRef("a", "b", "c")
			src.ConfigMapKeyRef = &nav1.ObjectKeySelector{Namespace: "a", Name: "b", Key: "c"}
			user(na).KeysFrom = []nav1.KeySource{src}
		}, "spec.users[0].keysFrom[0]: Invalid value: exactly one of secretKeyRef or configMapKeyRef must be set"},
		{"key source with no ref", func(na *nav1.NodeAccess) {
			user(na).KeysFrom = []nav1.KeySource{{Options: &nav1.KeyOptions{NoPTY: true}}}
		}, "exactly one of secretKeyRef or configMapKeyRef must be set"},
		{"key source namespace invalid", func(na *nav1.NodeAccess) {
			user(na).KeysFrom = []nav1.KeySource{secretRef("Team_A", "b", "c")}
		}, "spec.users[0].keysFrom[0].secretKeyRef.namespace in body should match"},
		{"key source name invalid", func(na *nav1.NodeAccess) {
			user(na).KeysFrom = []nav1.KeySource{secretRef("a", "../b", "c")}
		}, "spec.users[0].keysFrom[0].secretKeyRef.name in body should match"},
		{"key source key invalid", func(na *nav1.NodeAccess) {
			user(na).KeysFrom = []nav1.KeySource{secretRef("a", "b", "../c")}
		}, "spec.users[0].keysFrom[0].secretKeyRef.key in body should match"},
		{"too many key sources", func(na *nav1.NodeAccess) {
			for i := 0; i <= nav1.MaxKeySourcesPerUser; i++ {
				user(na).KeysFrom = append(user(na).KeysFrom, secretRef("a", fmt.Sprintf("s%d", i), "k"))
			}
		}, "spec.users[0].keysFrom: Too many: 17: must have at most 16 items"},
		// options
		{"from with a comma", func(na *nav1.NodeAccess) {
			key(na).Options = &nav1.KeyOptions{From: []string{`10.0.0.0/8,*`}}
		}, "spec.users[0].keys[0].options.from[0] in body should match"},
		{"from with a quote", func(na *nav1.NodeAccess) {
			user(na).Options = &nav1.KeyOptions{From: []string{`10.0.0.1",command="sh`}}
		}, "spec.users[0].options.from[0] in body should match"},
		{"from duplicated", func(na *nav1.NodeAccess) {
			key(na).Options = &nav1.KeyOptions{From: []string{"10.0.0.1", "10.0.0.1"}}
		}, `spec.users[0].keys[0].options.from[1]: Duplicate value: "10.0.0.1"`},
		{"too many from patterns", func(na *nav1.NodeAccess) {
			key(na).Options = &nav1.KeyOptions{}
			for i := 0; i < 33; i++ {
				key(na).Options.From = append(key(na).Options.From, fmt.Sprintf("10.0.0.%d", i))
			}
		}, "spec.users[0].keys[0].options.from: Too many: 33: must have at most 32 items"},
		{"command with a quote", func(na *nav1.NodeAccess) {
			key(na).Options = &nav1.KeyOptions{Command: `echo "hi`}
		}, "spec.users[0].keys[0].options.command in body should match"},
		{"command with a newline", func(na *nav1.NodeAccess) {
			key(na).Options = &nav1.KeyOptions{Command: "true\nssh-ed25519 AAAA"}
		}, "spec.users[0].keys[0].options.command in body should match"},
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := validNodeAccess(fmt.Sprintf("invalid-%d", i))
			tc.mutate(obj)
			err := k8sClient.Create(ctx, obj)
			if err == nil {
				_ = k8sClient.Delete(ctx, obj)
				t.Fatalf("the API server accepted an invalid NodeAccess; want an error containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestSchemaRefusesMalformedJSON covers shapes a typed client cannot send.
func TestSchemaRefusesMalformedJSON(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		edit func(spec map[string]any)
		want string
	}{
		{"missing nodeSelector", func(spec map[string]any) { delete(spec, "nodeSelector") }, "spec.nodeSelector: Required value"},
		{"key with NUL", func(spec map[string]any) {
			spec["users"].([]any)[0].(map[string]any)["keys"].([]any)[0].(map[string]any)["key"] = aliceKey + "\x00x"
		}, keyPatternMsg},
		{"empty keys list", func(spec map[string]any) {
			user := spec["users"].([]any)[0].(map[string]any)
			user["keys"] = []any{}
			user["keysFrom"] = []any{map[string]any{"secretKeyRef": map[string]any{"namespace": "a", "name": "b", "key": "c"}}}
		}, "spec.users[0].keys: Invalid value: 0: spec.users[0].keys in body should have at least 1 items"},
		{"empty users list", func(spec map[string]any) { spec["users"] = []any{} },
			"spec.users: Invalid value: 0: spec.users in body should have at least 1 items"},
		{"empty user name", func(spec map[string]any) { spec["users"].([]any)[0].(map[string]any)["name"] = "" },
			"spec.users[0].name in body should be at least 1 chars long"},
		{"empty keysFrom list", func(spec map[string]any) { spec["users"].([]any)[0].(map[string]any)["keysFrom"] = []any{} },
			"spec.users[0].keysFrom: Invalid value: 0: spec.users[0].keysFrom in body should have at least 1 items"},
		{"empty from list", func(spec map[string]any) {
			spec["users"].([]any)[0].(map[string]any)["options"] = map[string]any{"from": []any{}}
		}, "spec.users[0].options.from: Invalid value: 0: spec.users[0].options.from in body should have at least 1 items"},
		{"empty from pattern", func(spec map[string]any) {
			spec["users"].([]any)[0].(map[string]any)["options"] = map[string]any{"from": []any{""}}
		}, "spec.users[0].options.from[0] in body should be at least 1 chars long"},
		{"command too long", func(spec map[string]any) {
			spec["users"].([]any)[0].(map[string]any)["options"] = map[string]any{"command": strings.Repeat("x", 1025)}
		}, "spec.users[0].options.command: Too long: may not be more than 1024 bytes"},
		{"expiresAt not a time", func(spec map[string]any) { spec["expiresAt"] = "next tuesday" }, `spec.expiresAt: Invalid value: "next tuesday": spec.expiresAt in body must be of type date-time`},
		{"suspend not a bool", func(spec map[string]any) { spec["suspend"] = "yes" }, `spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean`},
		{"unknown option", func(spec map[string]any) {
			spec["users"].([]any)[0].(map[string]any)["options"] = map[string]any{"permitopen": "*:*"}
		}, `unknown field "spec.users[0].options.permitopen"`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(validNodeAccess(fmt.Sprintf("malformed-%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: raw}
			u.SetAPIVersion(nav1.GroupVersion.String())
			u.SetKind("NodeAccess")
			tc.edit(u.Object["spec"].(map[string]any))
			err = k8sClient.Create(ctx, u, client.FieldValidation(metav1.FieldValidationStrict))
			if err == nil {
				_ = k8sClient.Delete(ctx, u)
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

func TestSchemaRefusesInvalidStatus(t *testing.T) {
	ctx := context.Background()
	obj := validNodeAccess("status-invalid")
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
	for i := 0; i <= nav1.MaxFailingNodes; i++ {
		obj.Status.FailingNodes = append(obj.Status.FailingNodes, nav1.NodeFailure{Node: fmt.Sprintf("node-%d", i), Reason: "UserNotFound"})
	}
	err := k8sClient.Status().Update(ctx, obj)
	if err == nil || !strings.Contains(err.Error(), "status.failingNodes: Too many: 17: must have at most 16 items") {
		t.Fatalf("want failingNodes bounded at 16, got %v", err)
	}
}

// kubectl runs $KUBECTL, or the kubectl beside the control-plane binaries
// (`make envtest` builds it), against the test API server.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("KUBECTL")
	if bin == "" {
		bin = filepath.Join(env.BinaryAssetsDirectory, "kubectl")
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconf}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String()
}

func TestKubectlExplainPrintsFieldDocs(t *testing.T) {
	out := kubectl(t, "explain", "nodeaccess.spec.users")
	for _, want := range []string{
		"users lists the local accounts on the selected nodes",
		"keysFrom",
		"name is the local account on the node",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain nodeaccess.spec.users does not show %q:\n%s", want, out)
		}
	}
	out = kubectl(t, "explain", "na.spec.users.keys.options.from")
	if !strings.Contains(out, "from restricts the source addresses the key is accepted from") {
		t.Errorf("kubectl explain (short name) does not show the from docs:\n%s", out)
	}
}

func TestKubectlGetShowsPrinterColumns(t *testing.T) {
	ctx := context.Background()
	obj := validNodeAccess("columns")
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
	obj.Status = nav1.NodeAccessStatus{SelectedNodes: 4, NodesInSync: 3, KeysGranted: 1, Conditions: []metav1.Condition{{
		Type: nav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: nav1.WaitingForNodesReason,
		Message: "3 of 4 nodes in sync", LastTransitionTime: metav1.Now(),
	}}}
	if err := k8sClient.Status().Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
	out := kubectl(t, "get", "na", "columns", "-o", "wide")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and one row, got:\n%s", out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	wantHeader := []string{"NAME", "USERS", "KEYS", "SELECTED", "IN-SYNC", "READY", "AGE", "REASON", "NEXT-EXPIRY", "SUSPENDED"}
	if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
		t.Fatalf("columns are %v, want %v", header, wantHeader)
	}
	wantRow := []string{"columns", "deploy", "1", "4", "3", "False"}
	if strings.Join(row[:6], " ") != strings.Join(wantRow, " ") || row[7] != nav1.WaitingForNodesReason {
		t.Fatalf("row is %v, want it to start with %v and give the reason %s", row, wantRow, nav1.WaitingForNodesReason)
	}
}
