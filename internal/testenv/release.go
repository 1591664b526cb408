package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Release is one released version, as hack/releases.yaml records it.
type Release struct {
	Version      string `json:"version"`
	Commit       string `json:"commit"`
	BundleSHA256 string `json:"bundleSHA256"`
}

// Releases lists the released versions, oldest first.
func Releases() ([]Release, error) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "hack", "releases.yaml"))
	if err != nil {
		return nil, err
	}
	var rs []Release
	if err := yaml.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("reading hack/releases.yaml: %w", err)
	}
	return rs, nil
}

// ReleaseBinaries builds the manager and agent of a released version from
// its commit, taken from the clone's own history (git archive; nothing is
// downloaded but Go modules), into bin/release/<version>/ and returns that
// directory. A build already there for the same commit is reused.
func ReleaseBinaries(version string) (string, error) {
	rs, err := Releases()
	if err != nil {
		return "", err
	}
	var rel *Release
	for i := range rs {
		if rs[i].Version == version {
			rel = &rs[i]
		}
	}
	if rel == nil {
		return "", fmt.Errorf("version %s is not in hack/releases.yaml", version)
	}
	out := filepath.Join(RepoRoot(), "bin", "release", version)
	stamp := filepath.Join(out, ".commit")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == rel.Commit {
		return out, nil
	}
	src, err := os.MkdirTemp("", "nodeaccess-release-"+version)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	archive := exec.Command("git", "archive", "--format=tar", rel.Commit)
	archive.Dir = RepoRoot()
	var tarball, stderr bytes.Buffer
	archive.Stdout, archive.Stderr = &tarball, &stderr
	if err := archive.Run(); err != nil {
		return "", fmt.Errorf("git archive %s (a clone with history is needed): %w: %s", rel.Commit, err, stderr.String())
	}
	untar := exec.Command("tar", "-x", "-C", src)
	untar.Stdin = &tarball
	if b, err := untar.CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpacking %s: %w: %s", rel.Commit, err, b)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	for _, b := range []struct{ name, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(out, b.name), b.pkg)
		cmd.Dir = src
		if output, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the %s %s: %w: %s", version, b.name, err, output)
		}
	}
	return out, os.WriteFile(stamp, []byte(rel.Commit+"\n"), 0o644)
}
