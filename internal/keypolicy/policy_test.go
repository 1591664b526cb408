package keypolicy

import (
	"crypto/dsa" //nolint:staticcheck // DSA keys are generated to prove they are refused.
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

func line(t testing.TB, pub any, comment string) string {
	t.Helper()
	sp, ok := pub.(ssh.PublicKey)
	if !ok {
		var err error
		if sp, err = ssh.NewPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

func edKey(t testing.TB) ed25519.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func rsaKey(t testing.TB, bits int) *rsa.PublicKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PublicKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

// skEd25519 builds a FIDO sk-ssh-ed25519@openssh.com public key line.
func skEd25519(t testing.TB) string {
	pub := edKey(t)
	blob := ssh.Marshal(struct {
		Name        string
		Key         []byte
		Application string
	}{ssh.KeyAlgoSKED25519, pub, "ssh:"})
	sp, err := ssh.ParsePublicKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	return line(t, sp, "yubikey")
}

func certificate(t testing.TB) string {
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(edKey(t))
	cert := &ssh.Certificate{Key: sp, CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return line(t, cert, "cert")
}

func TestAcceptedKeys(t *testing.T) {
	cases := map[string]struct {
		line string
		typ  string
		bits int
	}{
		"ed25519":              {line(t, edKey(t), "alice@laptop"), ssh.KeyAlgoED25519, 256},
		"ecdsa p256":           {line(t, ecKey(t, elliptic.P256()), "a"), ssh.KeyAlgoECDSA256, 256},
		"ecdsa p384":           {line(t, ecKey(t, elliptic.P384()), "a"), ssh.KeyAlgoECDSA384, 384},
		"ecdsa p521":           {line(t, ecKey(t, elliptic.P521()), "a"), ssh.KeyAlgoECDSA521, 521},
		"rsa 3072":             {line(t, rsaKey(t, 3072), "a"), ssh.KeyAlgoRSA, 3072},
		"sk ed25519":           {skEd25519(t), ssh.KeyAlgoSKED25519, 256},
		"no comment":           {strings.TrimSuffix(line(t, edKey(t), ""), " "), ssh.KeyAlgoED25519, 256},
		"surrounded by spaces": {"  " + line(t, edKey(t), "x") + "  ", ssh.KeyAlgoED25519, 256},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			k, err := DefaultPolicy().Parse(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			if k.Type != tc.typ || k.Bits != tc.bits {
				t.Fatalf("type %s bits %d, want %s %d", k.Type, k.Bits, tc.typ, tc.bits)
			}
			// Type and Data round-trip to the same key and fingerprint.
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Type + " " + k.Data))
			if err != nil || ssh.FingerprintSHA256(pub) != k.Fingerprint || !strings.HasPrefix(k.Fingerprint, "SHA256:") {
				t.Fatalf("normalised key does not round-trip: %v %s", err, k.Fingerprint)
			}
		})
	}
}

func TestRefusedKeys(t *testing.T) {
	// A DSA public key in OpenSSH wire format (x/crypto/ssh no longer builds one).
	dsaLine := func() string {
		var k dsa.PrivateKey
		if err := dsa.GenerateParameters(&k.Parameters, rand.Reader, dsa.L1024N160); err != nil {
			t.Fatal(err)
		}
		if err := dsa.GenerateKey(&k, rand.Reader); err != nil {
			t.Fatal(err)
		}
		blob := ssh.Marshal(struct {
			Name       string
			P, Q, G, Y *big.Int
		}{ssh.KeyAlgoDSA, k.P, k.Q, k.G, k.Y})
		return ssh.KeyAlgoDSA + " " + base64.StdEncoding.EncodeToString(blob) + " old"
	}
	good := line(t, edKey(t), "alice")
	fields := strings.Fields(good)
	edBlob := fields[1]
	cases := map[string]struct {
		line   string
		reason string
	}{
		"rsa 2048":              {line(t, rsaKey(t, 2048), "weak"), nav1.WeakKeyReason},
		"rsa 1024":              {line(t, rsaKey(t, 1024), "weak"), nav1.WeakKeyReason},
		"dsa":                   {dsaLine(), nav1.UnsupportedKeyTypeReason},
		"certificate":           {certificate(t), nav1.CertificateNotAllowedReason},
		"command option":        {`command="/bin/sh" ` + good, nav1.EmbeddedOptionsReason},
		"no-pty option":         {"no-pty " + good, nav1.EmbeddedOptionsReason},
		"from option":           {`from="*" ` + good, nav1.EmbeddedOptionsReason},
		"newline":               {good + "\n" + good, nav1.MultipleLinesReason},
		"carriage return":       {good + "\r", nav1.MultipleLinesReason},
		"NUL":                   {good + "\x00", nav1.ForbiddenCharacterReason},
		"escape character":      {good + " \x1b[2J", nav1.ForbiddenCharacterReason},
		"no-break space":        {fields[0] + "\u00a0" + edBlob, nav1.ForbiddenCharacterReason},
		"line separator":        {good + "\u2028", nav1.ForbiddenCharacterReason},
		"zero width space":      {fields[0] + " \u200b" + edBlob, nav1.ForbiddenCharacterReason},
		"byte order mark":       {"\ufeff" + good, nav1.ForbiddenCharacterReason},
		"100 KB of base64":      {"ssh-rsa " + strings.Repeat("A", 100<<10), nav1.KeyTooLongReason},
		"second key in comment": {good + " " + line(t, edKey(t), "bob"), nav1.MultipleKeysReason},
		"garbage":               {"hello world", nav1.MalformedKeyReason},
		"empty":                 {"", nav1.MalformedKeyReason},
		"bad base64":            {"ssh-ed25519 AAAA!!!!", nav1.MalformedKeyReason},
		"wrong type name":       {"ssh-rsa " + edBlob + " x", nav1.MalformedKeyReason},
		"invalid utf-8":         {good + " \xff", nav1.ForbiddenCharacterReason},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DefaultPolicy().Parse(tc.line)
			var r *Refusal
			if !errors.As(err, &r) || r.Reason != tc.reason {
				t.Fatalf("want %s, got %v", tc.reason, err)
			}
			if len(tc.line) > 60 && strings.Contains(r.Message, tc.line[:60]) {
				t.Fatalf("the message repeats the key: %s", r.Message)
			}
		})
	}
}

func TestPolicyKnobs(t *testing.T) {
	rsa2048 := line(t, rsaKey(t, 2048), "x")
	if _, err := (Policy{MinRSABits: 2048}).Parse(rsa2048); err != nil {
		t.Fatalf("RSA 2048 refused with a 2048-bit minimum: %v", err)
	}
	k, err := (Policy{MinRSABits: 3072, AllowCertificates: true}).Parse(certificate(t))
	if err != nil || !strings.HasSuffix(k.Type, "-cert-v01@openssh.com") {
		t.Fatalf("certificate refused when allowed: %v", err)
	}
}

func TestSanitizeComment(t *testing.T) {
	cases := map[string]string{
		"alice@laptop":           "alice@laptop",
		"  José  (on call)\t":    "José (on call)",
		"x\x1b[2Jy":              "x[2Jy",
		"evil nodeaccess=team-a": "evil nodeaccess:team-a",
		"a\u00a0b":               "a b",
		strings.Repeat("é", 150): strings.Repeat("é", 100),
	}
	for in, want := range cases {
		if got := SanitizeComment(in); got != want {
			t.Errorf("SanitizeComment(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseList(t *testing.T) {
	a, b := line(t, edKey(t), "a"), line(t, edKey(t), "b")
	content := "# team keys\r\n\r\n" + a + "\r\n   # indented comment\n" + "not a key\n" + b
	keys, refusals := DefaultPolicy().ParseList(content)
	if len(keys) != 2 || keys[0].Comment != "a" || keys[1].Comment != "b" {
		t.Fatalf("keys %+v", keys)
	}
	if len(refusals) != 1 || refusals[0].Line != 5 || refusals[0].Reason != nav1.MalformedKeyReason {
		t.Fatalf("refusals %+v", refusals)
	}

	var many strings.Builder
	for i := 0; i < MaxKeysPerSource+1; i++ {
		many.WriteString(line(t, edKey(t), fmt.Sprint(i)) + "\n")
	}
	keys, refusals = DefaultPolicy().ParseList(many.String())
	if len(keys) != MaxKeysPerSource || len(refusals) != 1 || refusals[0].Reason != nav1.TooManyKeysReason || refusals[0].Line != MaxKeysPerSource+1 {
		t.Fatalf("%d keys, refusals %+v", len(keys), refusals)
	}

	keys, refusals = DefaultPolicy().ParseList(strings.Repeat("#", MaxSourceBytes+1))
	if len(keys) != 0 || len(refusals) != 1 || refusals[0].Reason != nav1.KeyTooLongReason {
		t.Fatalf("an oversized source: %d keys, %+v", len(keys), refusals)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(line(f, edKey(f), "alice"))
	f.Add("ssh-rsa AAAA x")
	f.Add(`command="x" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq`)
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq a nodeaccess=x \u00a0")
	f.Fuzz(func(t *testing.T, in string) {
		k, err := DefaultPolicy().Parse(in)
		if err != nil {
			return
		}
		out := k.Type + " " + k.Data + " " + k.Comment
		if strings.ContainsAny(out, "\r\n\x00") || strings.Contains(k.Comment, "nodeaccess=") {
			t.Fatalf("accepted key renders unsafely: %q", out)
		}
		again, err := DefaultPolicy().Parse(k.Type + " " + k.Data)
		if err != nil || again.Data != k.Data {
			t.Fatalf("normalised key does not parse back: %v", err)
		}
	})
}

func FuzzParseList(f *testing.F) {
	f.Add("# c\n" + line(f, edKey(f), "a") + "\r\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		keys, _ := DefaultPolicy().ParseList(in)
		if len(keys) > MaxKeysPerSource {
			t.Fatalf("%d keys", len(keys))
		}
	})
}

// A key source is a Secret or ConfigMap read on someone else's behalf: a
// refusal names the line and the reason, and at most the type and
// fingerprint of a key that parsed; never any text of the line.
func TestRefusalsNeverEchoTheSource(t *testing.T) {
	weak := line(t, rsaKey(t, 2048), "weak-comment-text")
	source := strings.Join([]string{
		"hunter2-password",
		"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCY",
		"ssh-ed25519 not-base64-secret!! trailing-secret-words",
		`command="/opt/secret-command" ` + line(t, edKey(t), "opt-comment"),
		"ssh-rsa " + strings.Fields(line(t, edKey(t), ""))[1] + " mislabelled-secret",
		weak,
		"token\x1bwith-escape-secret",
	}, "\n")
	_, refusals := DefaultPolicy().ParseList(source)
	if len(refusals) != 7 {
		t.Fatalf("want 7 refusals, got %d: %+v", len(refusals), refusals)
	}
	allowed := map[string]bool{"ssh-ed25519": true, "ssh-rsa": true}
	for _, r := range refusals {
		for _, word := range strings.FieldsFunc(source, func(c rune) bool { return c == ' ' || c == '\n' || c == '=' || c == '"' }) {
			if len(word) >= 5 && !allowed[word] && strings.Contains(r.Message, word) {
				t.Errorf("line %d: the message %q repeats %q from the source", r.Line, r.Message, word)
			}
		}
	}
}
