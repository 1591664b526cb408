package bundle

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blang/semver/v4"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// opm returns the opm binary built by `make k8s-bin` (hack/tools/build.sh opm).
func opm(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(testenv.RepoRoot(), "bin", "k8s")
	}
	path := filepath.Join(dir, "opm")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("opm is not built (run `make k8s-bin`): %v", err)
	}
	return path
}

func runOPM(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(opm(t), args...)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("opm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func TestCatalogValidatesWithOPM(t *testing.T) {
	runOPM(t, "validate", "catalog")
}

// The catalog's bundle for the current version is exactly what opm renders
// from bundle/ now: a stale catalog would install yesterday's manifests.
func TestCatalogCarriesTheCurrentBundle(t *testing.T) {
	version := load(t).CSV.Spec.Version.String()
	want := runOPM(t, "render", "bundle/", "-o", "yaml")
	got, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "catalog", "nodeaccess-operator", "bundle-v"+version+".yaml"))
	if err != nil {
		t.Fatalf("the catalog has no bundle for version %s (run `make catalog`): %v", version, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("catalog/nodeaccess-operator/bundle-v%s.yaml differs from `opm render bundle/`; run `make catalog`", version)
	}
}

type catalogDoc struct {
	Schema         string `json:"schema"`
	Name           string `json:"name"`
	DefaultChannel string `json:"defaultChannel"`
	Entries        []struct {
		Name      string   `json:"name"`
		Replaces  string   `json:"replaces"`
		Skips     []string `json:"skips"`
		SkipRange string   `json:"skipRange"`
	} `json:"entries"`
}

// Every channel follows OLM's naming convention, every release is in
// candidate, and each entry's skipRange covers every earlier release, so
// that a Subscription on any version upgrades straight to the newest.
func TestCatalogUpgradeGraph(t *testing.T) {
	var docs []catalogDoc
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "catalog", "nodeaccess-operator", "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var d catalogDoc
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs = append(docs, d)
		}
	}
	bundles := map[string]bool{}
	channels := map[string]catalogDoc{}
	defaultChannel := ""
	for _, d := range docs {
		switch d.Schema {
		case "olm.bundle":
			bundles[d.Name] = true
		case "olm.channel":
			channels[d.Name] = d
		case "olm.package":
			defaultChannel = d.DefaultChannel
		}
	}
	if _, ok := channels[defaultChannel]; !ok {
		t.Fatalf("default channel %q is not a channel", defaultChannel)
	}
	for name := range channels {
		if !strings.HasPrefix(name, "candidate") && !strings.HasPrefix(name, "fast") && !strings.HasPrefix(name, "stable") {
			t.Errorf("channel %q does not follow OLM's candidate/fast/stable convention", name)
		}
	}
	inCandidate := map[string]bool{}
	for _, e := range channels["candidate"].Entries {
		inCandidate[e.Name] = true
	}
	for b := range bundles {
		if !inCandidate[b] {
			t.Errorf("bundle %s is not in the candidate channel", b)
		}
	}
	for name, ch := range channels {
		for _, e := range ch.Entries {
			if !bundles[e.Name] {
				t.Errorf("channel %s lists %s, which has no bundle in the catalog", name, e.Name)
			}
			v, err := semver.Parse(strings.TrimPrefix(e.Name, "nodeaccess-operator.v"))
			if err != nil {
				t.Errorf("channel %s entry %s: %v", name, e.Name, err)
				continue
			}
			r, err := semver.ParseRange(e.SkipRange)
			if err != nil {
				t.Errorf("channel %s entry %s: skipRange %q: %v", name, e.Name, e.SkipRange, err)
				continue
			}
			if r(v) || !r(semver.MustParse("0.0.1")) {
				t.Errorf("channel %s entry %s: skipRange %q must cover every earlier release and not the entry itself", name, e.Name, e.SkipRange)
			}
		}
	}
}
