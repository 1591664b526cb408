package nodewriter

import (
	"bytes"
	"strings"
	"testing"
)

// The read is sized by the file's size when opened but bounded only by the
// limit: a file that grew or shrank since is read as it is, and one over
// the limit is cut at it (the caller refuses it).
func TestReadAtMostReadsWhatIsThereUpToTheLimit(t *testing.T) {
	content := strings.Repeat("ssh-ed25519 AAAA key\n", 100)
	for _, c := range []struct {
		name        string
		size, limit int64
		want        int
	}{
		{"as stated", int64(len(content)), 1 << 20, len(content)},
		{"grew since", 10, 1 << 20, len(content)},
		{"shrank since", 1 << 16, 1 << 20, len(content)},
		{"stated as nothing", 0, 1 << 20, len(content)},
		{"over the limit", int64(len(content)), 101, 101},
	} {
		got, err := readAtMost(bytes.NewBufferString(content), c.size, c.limit)
		if err != nil || len(got) != c.want || !strings.HasPrefix(content, string(got)) {
			t.Errorf("%s: read %d bytes (%v), want the first %d", c.name, len(got), err, c.want)
		}
	}
}
