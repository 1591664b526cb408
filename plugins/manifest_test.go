// Package plugins holds the krew plugin manifest of kubectl nodeaccess; its
// test checks the manifest with krew's own validator and against the
// project's release conventions.
package plugins

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// validator builds krew's validate-krew-manifest (v0.4.3, hack/tools/krew)
// into bin/k8s when it is missing or stale, and returns its path.
func validator(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "hack", "tools", "build.sh"), "validate-krew-manifest")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building krew's validator: %v\n%s", err, out)
	}
	bin := filepath.Join(root, "bin", "k8s", "validate-krew-manifest")
	if dir := os.Getenv("K8S_BIN_DIR"); dir != "" {
		bin = filepath.Join(dir, "validate-krew-manifest")
	}
	return bin
}

func validate(t *testing.T, bin, path string) (string, error) {
	t.Helper()
	// -skip-install: installing would download the release archives.
	out, err := exec.Command(bin, "-manifest", path, "-skip-install").CombinedOutput()
	return string(out), err
}

// manifest is the part of krew's Plugin kind the conventions check.
type manifest struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector metav1.LabelSelector `json:"selector"`
			URI      string               `json:"uri"`
			Sha256   string               `json:"sha256"`
			Bin      string               `json:"bin"`
			Files    []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

func TestKrewManifest(t *testing.T) {
	bin := validator(t)
	if out, err := validate(t, bin, "nodeaccess.yaml"); err != nil {
		t.Fatalf("krew's validator refuses plugins/nodeaccess.yaml: %v\n%s", err, out)
	}

	// The validator really validates: a broken copy is refused.
	data, err := os.ReadFile("nodeaccess.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, broken := range map[string]string{
		"bad sha256":    strings.Replace(string(data), strings.Repeat("0", 64), "not-a-sha256", 1),
		"no bin":        strings.Replace(string(data), "bin: kubectl-nodeaccess\n", "bin: \"\"\n", 1),
		"other os":      strings.Replace(string(data), "os: darwin", "os: plan9", 1),
		"empty version": strings.Replace(string(data), "version: v0.2.0", "version: \"\"", 1),
	} {
		path := filepath.Join(t.TempDir(), "nodeaccess.yaml")
		if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := validate(t, bin, path); err == nil {
			t.Errorf("%s: krew's validator accepted it:\n%s", name, out)
		}
	}

	// The project's conventions: the Makefile's version, one archive per
	// platform named after it, the binary kubectl runs, and a license.
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`(?m)^VERSION \?= (\S+)$`).FindSubmatch(makefile)
	if version == nil || m.Spec.Version != "v"+string(version[1]) {
		t.Errorf("manifest version %s, Makefile VERSION %s", m.Spec.Version, version)
	}
	want := map[string]bool{"linux/amd64": true, "linux/arm64": true, "darwin/amd64": true, "darwin/arm64": true, "windows/amd64": true}
	for _, p := range m.Spec.Platforms {
		osArch := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		delete(want, osArch)
		exe := "kubectl-nodeaccess"
		if p.Selector.MatchLabels["os"] == "windows" {
			exe += ".exe"
		}
		archive := "/" + m.Spec.Version + "/kubectl-nodeaccess_" + strings.ReplaceAll(osArch, "/", "_") + ".tar.gz"
		if p.Bin != exe || !strings.HasSuffix(p.URI, archive) {
			t.Errorf("%s: bin %s uri %s; want %s from an archive ending %s", osArch, p.Bin, p.URI, exe, archive)
		}
		var license bool
		for _, f := range p.Files {
			license = license || f.From == "LICENSE"
		}
		if !license {
			t.Errorf("%s: the archive's LICENSE is not installed", osArch)
		}
	}
	if len(want) > 0 {
		t.Errorf("no platform for %v", want)
	}
	if m.Metadata.Name != "nodeaccess" || m.Kind != "Plugin" {
		t.Errorf("plugin %s %s: want Plugin nodeaccess, so that kubectl runs kubectl-nodeaccess as kubectl nodeaccess", m.Kind, m.Metadata.Name)
	}
}
