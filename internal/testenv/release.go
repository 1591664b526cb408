package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/image"
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

// releaseBuild says how a release's binaries are built: as its image holds
// them (static, -trimpath, stripped, as the release's Dockerfile builds
// them), so that they run in a FROM-scratch image as well as on the machine.
const releaseBuild = "CGO_ENABLED=0 -trimpath -ldflags=-s -w"

// ReleaseBinaries builds the manager and agent of a released version from
// its commit, taken from the clone's own history (git archive; nothing is
// downloaded but Go modules), into bin/release/<version>/ and returns that
// directory. A build already there for the same commit and build flags is
// reused.
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
	want := rel.Commit + " " + releaseBuild
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
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
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(out, b.name), b.pkg)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if output, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the %s %s: %w: %s", version, b.name, err, output)
		}
	}
	return out, os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

// ReleaseImage writes the image archive of a released version to out,
// tagged ref: its manager (the entrypoint) and agent from ReleaseBinaries,
// as the non-root user 65532, written by internal/image as the current
// operator image is. The release's scorecard test binary, which nothing on
// a node runs, is left out.
func ReleaseImage(version, ref, out string) error {
	dir, err := ReleaseBinaries(version)
	if err != nil {
		return err
	}
	var files []image.File
	for _, name := range []string{"manager", "agent"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		files = append(files, image.File{Path: "/" + name, Mode: 0o755, Data: data})
	}
	var buf bytes.Buffer
	if _, err := image.Write(&buf, image.Config{
		Ref: ref, Entrypoint: []string{"/manager"}, User: "65532:65532", OS: "linux", Architecture: runtime.GOARCH,
	}, files); err != nil {
		return fmt.Errorf("writing the %s image: %w", version, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out+".part", buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(out+".part", out)
}
