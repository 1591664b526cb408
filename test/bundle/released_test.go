package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// A released bundle in catalog/ is exactly what was released: the bytes
// recorded in hack/releases.yaml and the file at the release's commit.
// Editing one (by hand, or by a `make catalog` run with an old VERSION)
// fails here.
func TestReleasedBundlesAreUnchanged(t *testing.T) {
	root := testenv.RepoRoot()
	rs, err := testenv.Releases()
	if err != nil || len(rs) == 0 {
		t.Fatalf("hack/releases.yaml lists no release (%v)", err)
	}
	for _, r := range rs {
		rel := filepath.Join("catalog", "nodeaccess-operator", "bundle-v"+r.Version+".yaml")
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("release %s: %v", r.Version, err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != r.BundleSHA256 {
			t.Errorf("%s was edited: sha256 %s, released as %s; restore it with `git show %s:%s`", rel, got, r.BundleSHA256, r.Commit, rel)
		}
		cmd := exec.Command("git", "show", r.Commit+":"+rel)
		cmd.Dir = root
		released, err := cmd.Output()
		if err != nil {
			t.Fatalf("release %s: reading %s at its commit %s (a clone with history is needed): %v", r.Version, rel, r.Commit, err)
		}
		if string(released) != string(data) {
			t.Errorf("%s differs from the file at the release's commit %s", rel, r.Commit)
		}
	}
}
