// Package keypolicy decides which public keys may be granted. Every key is
// parsed with golang.org/x/crypto/ssh and normalised (type, canonical base64,
// sanitised comment, SHA256 fingerprint). Refused: anything that is not
// exactly one key on one line (line breaks, NUL and other control
// characters, Unicode look-alike spaces, an options prefix, a second key),
// DSA, RSA below the minimum size (3072 bits by default), certificates
// unless allowed, and key types outside the list below. Options are never
// taken from key text: they come from NodeAccess's typed fields.
package keypolicy

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Limits.
const (
	// DefaultMinRSABits is the smallest RSA key accepted by default.
	DefaultMinRSABits = 3072
	// MaxLineLength is the longest key line accepted.
	MaxLineLength = 8192
	// MaxKeysPerSource is the most keys one Secret or ConfigMap key may hold.
	MaxKeysPerSource = 1024
	// MaxSourceBytes is the largest key source read.
	MaxSourceBytes = 1 << 20
	// maxCommentBytes bounds a sanitised comment.
	maxCommentBytes = 200
)

// acceptedTypes are the key types granted (certificates aside).
var acceptedTypes = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoRSA:        true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoSKECDSA256: true,
}

// Policy says which keys are acceptable.
type Policy struct {
	// MinRSABits is the smallest RSA modulus accepted, in bits.
	MinRSABits int
	// AllowCertificates accepts OpenSSH certificates (their key must pass too).
	AllowCertificates bool
}

// DefaultPolicy is the policy the manager uses unless told otherwise.
func DefaultPolicy() Policy { return Policy{MinRSABits: DefaultMinRSABits} }

// Key is an accepted, normalised public key.
type Key struct {
	// Type is the key's algorithm, e.g. "ssh-ed25519".
	Type string
	// Data is the canonical base64 of the key.
	Data string
	// Comment is the key's own comment, sanitised.
	Comment string
	// Fingerprint is "SHA256:...".
	Fingerprint string
	// Bits is the key size where it has one (RSA modulus, ECDSA curve, 256 for ed25519).
	Bits int
}

// Refusal says why a key was refused. Its message never repeats the line it
// refuses: key sources are Secrets and ConfigMaps read on someone else's
// behalf, and a line that is not a key may be anything (a password, a
// token). It says at most the type and SHA256 fingerprint of a key that parsed.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// lookAlikeSpace reports runes that look like a space but are not ASCII space or tab.
func lookAlikeSpace(r rune) bool {
	return r != ' ' && r != '\t' && (unicode.IsSpace(r) || unicode.Is(unicode.Zs, r) || r == '\u200b' || r == '\ufeff' || r == '\u2060')
}

// Parse checks one key line ("<type> <base64> [comment]") and normalises it.
func (p Policy) Parse(line string) (Key, error) {
	switch {
	case strings.ContainsAny(line, "\r\n"):
		return Key{}, refuse(nav1.MultipleLinesReason, "the key contains a line break; give one key per entry")
	case len(line) > MaxLineLength:
		return Key{}, refuse(nav1.KeyTooLongReason, "the key is %d bytes long, more than %d", len(line), MaxLineLength)
	case !utf8.ValidString(line):
		return Key{}, refuse(nav1.ForbiddenCharacterReason, "the key is not valid UTF-8")
	}
	for _, r := range line {
		if r == 0 || (r < 0x20 && r != '\t') || r == 0x7f || lookAlikeSpace(r) || unicode.Is(unicode.Cf, r) {
			return Key{}, refuse(nav1.ForbiddenCharacterReason, "the line has a control or look-alike space character")
		}
	}
	trimmed := strings.TrimSpace(line)
	if trimmed == "" {
		return Key{}, refuse(nav1.MalformedKeyReason, "the key is empty")
	}
	if strings.Fields(trimmed)[0] == ssh.KeyAlgoDSA {
		return Key{}, refuse(nav1.UnsupportedKeyTypeReason, "DSA keys (ssh-dss) are refused: they are limited to 1024 bits and disabled in OpenSSH")
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(trimmed))
	if err != nil {
		return Key{}, refuse(nav1.MalformedKeyReason, "the line cannot be parsed as '<type> <base64> [comment]'")
	}
	if len(options) > 0 {
		return Key{}, refuse(nav1.EmbeddedOptionsReason, "the key %s has an options prefix; set options through the typed options field", ssh.FingerprintSHA256(pub))
	}
	if len(strings.TrimSpace(string(rest))) > 0 || containsKey(comment) {
		return Key{}, refuse(nav1.MultipleKeysReason, "the key %s is followed by another key; give one key per entry", ssh.FingerprintSHA256(pub))
	}
	// The written type must be the key's own: "ssh-rsa <ed25519 blob>" is malformed.
	if fields := strings.Fields(trimmed); fields[0] != pub.Type() {
		return Key{}, refuse(nav1.MalformedKeyReason, "the type written before the key %s is not its own (%s)", ssh.FingerprintSHA256(pub), pub.Type())
	}
	k := Key{
		Type:        pub.Type(),
		Data:        base64.StdEncoding.EncodeToString(pub.Marshal()),
		Comment:     SanitizeComment(comment),
		Fingerprint: ssh.FingerprintSHA256(pub),
	}
	if err := p.check(pub, &k); err != nil {
		return Key{}, err
	}
	return k, nil
}

// check applies the type and size rules.
func (p Policy) check(pub ssh.PublicKey, k *Key) error {
	if cert, ok := pub.(*ssh.Certificate); ok {
		if !p.AllowCertificates {
			return refuse(nav1.CertificateNotAllowedReason, "%s certificate %s refused; the operator was not started with --allow-certificates", cert.Key.Type(), k.Fingerprint)
		}
		return p.check(cert.Key, k)
	}
	t := pub.Type()
	if t == ssh.KeyAlgoDSA {
		return refuse(nav1.UnsupportedKeyTypeReason, "DSA keys (ssh-dss) are refused: they are limited to 1024 bits and disabled in OpenSSH")
	}
	if !acceptedTypes[t] {
		return refuse(nav1.UnsupportedKeyTypeReason, "%s keys are not accepted (%s)", t, k.Fingerprint)
	}
	switch t {
	case ssh.KeyAlgoRSA:
		ck, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return refuse(nav1.MalformedKeyReason, "the RSA key cannot be read")
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		if !ok {
			return refuse(nav1.MalformedKeyReason, "the RSA key cannot be read")
		}
		k.Bits = rk.N.BitLen()
		if k.Bits < p.MinRSABits {
			return refuse(nav1.WeakKeyReason, "RSA key %s of %d bits; at least %d are required", k.Fingerprint, k.Bits, p.MinRSABits)
		}
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoSKECDSA256:
		k.Bits = 256
	case ssh.KeyAlgoECDSA384:
		k.Bits = 384
	case ssh.KeyAlgoECDSA521:
		k.Bits = 521
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519:
		k.Bits = 256
	}
	return nil
}

// containsKey reports whether a comment holds another key: a key type
// followed by base64 that parses as a key.
func containsKey(comment string) bool {
	fields := strings.Fields(comment)
	for i := 0; i+1 < len(fields); i++ {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(fields[i] + " " + fields[i+1])); err == nil {
			return true
		}
	}
	return false
}

// SanitizeComment makes a comment safe to write after a key: printable
// characters only, single ASCII spaces, the operator's reserved
// "nodeaccess=" token neutralised, at most 200 bytes.
func SanitizeComment(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == ' ' || r == '\t' || lookAlikeSpace(r):
			space = b.Len() > 0
		case unicode.IsPrint(r) && r != utf8.RuneError:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteRune(r)
		}
	}
	out := strings.ReplaceAll(b.String(), "nodeaccess=", "nodeaccess:")
	if len(out) > maxCommentBytes {
		cut := maxCommentBytes
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimRight(out[:cut], " ")
	}
	return out
}

// LineRefusal is a refusal of one line of a key source.
type LineRefusal struct {
	// Line is the 1-based line number.
	Line int
	Refusal
}

// ParseList parses the content of a Secret or ConfigMap key: one key per
// line; blank lines and lines starting with '#' are skipped; CRLF endings
// are accepted. At most MaxKeysPerSource keys are taken.
func (p Policy) ParseList(content string) ([]Key, []LineRefusal) {
	if len(content) > MaxSourceBytes {
		return nil, []LineRefusal{{Line: 1, Refusal: *refuse(nav1.KeyTooLongReason, "the key source is %d bytes, more than %d", len(content), MaxSourceBytes)}}
	}
	var keys []Key
	var refusals []LineRefusal
	for i, line := range strings.Split(content, "\n") {
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimLeft(line, " \t")
		if strings.TrimSpace(trimmed) == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if len(keys) == MaxKeysPerSource {
			refusals = append(refusals, LineRefusal{Line: i + 1, Refusal: *refuse(nav1.TooManyKeysReason, "a key source holds at most %d keys; the rest are ignored", MaxKeysPerSource)})
			break
		}
		k, err := p.Parse(line)
		var r *Refusal
		if errors.As(err, &r) {
			refusals = append(refusals, LineRefusal{Line: i + 1, Refusal: *r})
			continue
		}
		keys = append(keys, k)
	}
	return keys, refusals
}
