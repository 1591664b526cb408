package render

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
)

func genKey(t *testing.T, pub any, comment string) (line, blob string) {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	l := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return l + " " + comment, strings.Fields(l)[1]
}

func ed(t *testing.T, comment string) (line, blob string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return genKey(t, pub, comment)
}

func TestNodeAccess(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	k1, b1 := ed(t, "one")
	k2, b2 := ed(t, "two")
	k3, b3 := ed(t, "three")
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	kWeak, _ := genKey(t, &weak.PublicKey, "weak")
	secretRef := SourceRef{SourceSecret, "team", "keys", "authorized_keys"}
	missingRef := SourceRef{SourceConfigMap, "team", "gone", "k"}

	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: "team", UID: "uid-1", Generation: 3},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
			ExpiresAt:    at(48 * time.Hour),
			Users: []nav1.UserAccess{
				{
					Name:    "alice",
					Options: &nav1.KeyOptions{NoPTY: true},
					Keys: []nav1.AuthorizedKey{
						{Key: k1, Comment: "Alice\x01 nodeaccess=evil"},
						{Key: k2, ExpiresAt: at(-time.Minute)}, // expired: dropped silently
						{Key: k3, ExpiresAt: at(time.Hour), Options: &nav1.KeyOptions{NoPortForwarding: true}},
						{Key: kWeak}, // refused
						{Key: k1, Comment: "duplicate of the first"}, // same key, same options: once
					},
					KeysFrom: []nav1.KeySource{
						{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "team", Name: "keys", Key: "authorized_keys"}},
						{ConfigMapKeyRef: &nav1.ObjectKeySelector{Namespace: "team", Name: "gone", Key: "k"}},
					},
				},
				{Name: "root", Keys: []nav1.AuthorizedKey{{Key: k1}}},
			},
		},
	}
	sources := map[SourceRef]Source{secretRef: {Content: "# team\n" + k2 + "\nnot a key\n"}}
	res := NodeAccess(na, sources, nil, Options{Policy: keypolicy.DefaultPolicy()}, now)

	if res.TooLarge != nil || res.Expired {
		t.Fatalf("unexpected: tooLarge=%v expired=%v", res.TooLarge, res.Expired)
	}
	if len(res.Spec.Users) != 1 || res.Spec.Users[0].Name != "alice" {
		t.Fatalf("users %+v; want only alice (root refused)", res.Spec.Users)
	}
	keys := res.Spec.Users[0].Keys
	var got []string
	for _, k := range keys {
		got = append(got, k.Data)
	}
	if want := []string{b1, b3, b2}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("rendered keys %v, want %v", got, want)
	}
	if res.Keys != 3 {
		t.Errorf("keys granted %d, want 3", res.Keys)
	}
	if c := keys[0].Comment; strings.Contains(c, "nodeaccess=") || strings.ContainsRune(c, '\x01') || !strings.HasPrefix(c, "Alice") {
		t.Errorf("comment not sanitised: %q", c)
	}
	if !keys[0].Options.NoPTY || keys[1].Options.NoPTY || !keys[1].Options.NoPortForwarding || !keys[2].Options.NoPTY {
		t.Errorf("options: a key's own options replace the account's: %+v %+v %+v", keys[0].Options, keys[1].Options, keys[2].Options)
	}
	if keys[0].Fingerprint == "" || !strings.HasPrefix(keys[0].Fingerprint, "SHA256:") {
		t.Errorf("fingerprint %q", keys[0].Fingerprint)
	}
	if res.NextExpiry == nil || !res.NextExpiry.Equal(at(time.Hour)) {
		t.Errorf("next expiry %v, want in an hour", res.NextExpiry)
	}
	if len(res.Missing) != 1 || res.Missing[0] != missingRef {
		t.Errorf("missing %v, want %v", res.Missing, missingRef)
	}
	var refusals []string
	for _, r := range res.Refused {
		refusals = append(refusals, fmt.Sprintf("%s|%s|%s", r.User, r.Source, r.Reason))
	}
	want := []string{
		"alice|keys[3]|" + nav1.WeakKeyReason,
		"alice|secret team/keys key authorized_keys line 3|" + nav1.MalformedKeyReason,
		"root|users[1]|" + nav1.UserRefusedReason,
	}
	if strings.Join(refusals, "\n") != strings.Join(want, "\n") {
		t.Errorf("refusals:\n%s\nwant:\n%s", strings.Join(refusals, "\n"), strings.Join(want, "\n"))
	}
	if res.Spec.Hash == "" || res.Spec.Generation != 3 || res.Spec.NodeAccessUID != "uid-1" {
		t.Errorf("identity not rendered: %+v", res.Spec)
	}

	// Same inputs, same output.
	again := NodeAccess(na, sources, nil, Options{Policy: keypolicy.DefaultPolicy()}, now)
	if again.Spec.Hash != res.Spec.Hash {
		t.Error("rendering is not deterministic")
	}

	// root is granted only when allowed.
	allowed := NodeAccess(na, sources, nil, Options{Policy: keypolicy.DefaultPolicy(), AllowRoot: true}, now)
	if len(allowed.Spec.Users) != 2 || allowed.Spec.Users[1].Name != "root" {
		t.Errorf("root not granted with AllowRoot: %+v", allowed.Spec.Users)
	}
}

// Suspended and expired grants render their accounts with no key, so the
// agents visit them and prove the keys gone.
func TestSuspendedAndExpiredRenderNoKeys(t *testing.T) {
	now := time.Now()
	k, _ := ed(t, "k")
	base := nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "u"},
		Spec:       nav1.NodeAccessSpec{Users: []nav1.UserAccess{{Name: "alice", Keys: []nav1.AuthorizedKey{{Key: k}}}}},
	}
	suspended := base.DeepCopy()
	suspended.Spec.Suspend = true
	noKeys := func(res Result) bool {
		return len(res.Spec.Users) == 1 && res.Spec.Users[0].Name == "alice" && len(res.Spec.Users[0].Keys) == 0 && res.Keys == 0 && res.Spec.Hash != ""
	}
	if res := NodeAccess(suspended, nil, nil, Options{Policy: keypolicy.DefaultPolicy()}, now); !noKeys(res) || !res.Spec.Suspend {
		t.Errorf("suspended grant rendered %+v", res.Spec)
	}
	expired := base.DeepCopy()
	expired.Spec.ExpiresAt = &metav1.Time{Time: now.Add(-time.Second)}
	if res := NodeAccess(expired, nil, nil, Options{Policy: keypolicy.DefaultPolicy()}, now); !noKeys(res) || !res.Expired {
		t.Errorf("expired grant rendered %+v", res.Spec)
	}
}

func TestTooManyKeysRefusesTheWholeGrant(t *testing.T) {
	var content strings.Builder
	for i := 0; i < 5; i++ {
		line, _ := ed(t, fmt.Sprintf("k%d", i))
		content.WriteString(line + "\n")
	}
	na := &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "big", UID: "u"}, Spec: nav1.NodeAccessSpec{}}
	sources := map[SourceRef]Source{}
	// 5 keys per source line-set, spread over enough accounts and sources to pass MaxKeys.
	for u := 0; u < nav1.MaxUsers; u++ {
		user := nav1.UserAccess{Name: fmt.Sprintf("u%d", u)}
		for s := 0; s < nav1.MaxKeySourcesPerUser; s++ {
			ref := SourceRef{SourceSecret, "ns", fmt.Sprintf("u%d-s%d", u, s), "k"}
			user.KeysFrom = append(user.KeysFrom, nav1.KeySource{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: ref.Namespace, Name: ref.Name, Key: ref.Key}})
			var lines strings.Builder
			for i := 0; i < 9; i++ { // 9 distinct keys per source: 32*16*9 = 4608 > MaxKeys
				line, _ := ed(t, "x")
				lines.WriteString(line + "\n")
			}
			sources[ref] = Source{Content: lines.String()}
		}
		na.Spec.Users = append(na.Spec.Users, user)
	}
	res := NodeAccess(na, sources, nil, Options{Policy: keypolicy.DefaultPolicy()}, time.Now())
	if res.TooLarge == nil || !strings.Contains(res.TooLarge.Error(), "at most 4096") || !res.Narrowed {
		t.Fatalf("want the grant refused as too large, got %v (%d keys)", res.TooLarge, res.Keys)
	}
	for _, u := range res.Spec.Users {
		if len(u.Keys) != 0 {
			t.Fatal("a new grant over the limit must grant no key")
		}
	}
}
