package authorizedkeys

import (
	"regexp"
	"testing"
)

// The byte-loop checks must accept exactly what these expressions accept.
var reference = []struct {
	name  string
	check func(string) bool
	re    *regexp.Regexp
}{
	{"owner", validOwner, regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)},
	{"uid", validUID, regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)},
	{"type", validType, regexp.MustCompile(`^[A-Za-z0-9@._-]{1,64}$`)},
	{"base64", validBase64, regexp.MustCompile(`^[A-Za-z0-9+/]+={0,3}$`)},
	{"control", hasControl, regexp.MustCompile(`[\x00-\x1f\x7f]`)},
}

var validationSeeds = []string{
	"", "a", "A", "0", "-", ".", "a-b", "a.b", "-a", "a-", "a.", ".a", "team-a", "Team-a", "a_b",
	"0f3c2a10-1111-4222-8333-944455556666", "uid=1", "ssh-ed25519", "sk-ssh-ed25519@openssh.com",
	"ecdsa-sha2-nistp256", "a b", "AAAA", "AAAA=", "AAAA==", "AAAA===", "AAAA====", "=", "==", "A=A",
	"AA+/", "AA\n", "\nAA", "a\x00b", "a\x1fb", "a\x7fb", "a\u0085b", "é", "\xff", "a\rb", "a\tb",
	"x@y.z", "0123456789012345678901234567890123456789012345678901234567890123",
	"01234567890123456789012345678901234567890123456789012345678901234",
}

func TestValidationMatchesReference(t *testing.T) {
	for _, s := range validationSeeds {
		for _, r := range reference {
			if got, want := r.check(s), r.re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, the expression says %v", r.name, s, got, want)
			}
		}
	}
}

func FuzzValidationMatchesReference(f *testing.F) {
	for _, s := range validationSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range reference {
			if got, want := r.check(s), r.re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, the expression says %v", r.name, s, got, want)
			}
		}
	})
}
