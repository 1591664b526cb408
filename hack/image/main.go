// Command image builds the project's container images as archives that
// containerd imports (`ctr -n k8s.io images import`) and docker loads, with
// no docker daemon and no registry:
//
//	image operator -tag quay.io/nodeaccess/nodeaccess-operator:0.2.0 -o bin/image/nodeaccess-operator.tar
//	image pause    -o bin/image/pause.tar      (the real node's sandbox image; test infrastructure)
//	image build    -tag REF -o FILE [-user UID:GID] PKG...   (each package as /NAME, the first the entrypoint)
//
// Binaries are static (CGO_ENABLED=0) and reproducible (-trimpath, no VCS
// stamp, an empty build ID), and internal/image writes the archive
// deterministically, so the same commit and Go toolchain give the same
// image digest. The Dockerfile describes the same operator image for those
// who build with docker (hack/image's test checks that it does).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nodeaccess/nodeaccess-operator/internal/image"
)

// binary is one program of an image: where it goes and what builds it.
type binary struct {
	// Path is its place in the image ("/manager").
	Path string
	// Package is the Go package, relative to the repository root ("./cmd/agent").
	Package string
}

// spec is an image the repository builds.
type spec struct {
	Ref        string
	User       string
	Entrypoint []string
	Binaries   []binary
}

// operator is the operator's one image: the manager (its entrypoint), the
// agent and the operator's scorecard test, run as the non-root user 65532.
// The Dockerfile's final stage must describe exactly this.
var operator = spec{
	Ref:        "quay.io/nodeaccess/nodeaccess-operator:latest",
	User:       "65532:65532",
	Entrypoint: []string{"/manager"},
	Binaries: []binary{
		{Path: "/manager", Package: "."},
		{Path: "/agent", Package: "./cmd/agent"},
		{Path: "/nodeaccess-scorecard", Package: "./cmd/scorecard"},
	},
}

// PauseRef is the pause image's tag; the real node's containerd uses it as
// its sandbox image.
const PauseRef = "localhost/nodeaccess-pause:local"

// pause is the real node's sandbox image (hack/pause), run as 65535 like
// the pause image of a Kubernetes distribution.
var pause = spec{
	Ref:        PauseRef,
	User:       "65535:65535",
	Entrypoint: []string{"/pause"},
	Binaries:   []binary{{Path: "/pause", Package: "./hack/pause"}},
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: image operator|pause|build [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	out := fs.String("o", "", "the archive to write")
	tag := fs.String("tag", "", "the image's tag")
	user := fs.String("user", "65532:65532", "the image's user (build only)")
	arch := fs.String("arch", runtime.GOARCH, "the architecture to build for")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var s spec
	switch args[0] {
	case "operator":
		s = operator
	case "pause":
		s = pause
	case "build":
		if fs.NArg() == 0 {
			return fmt.Errorf("build: name at least one package")
		}
		s = spec{User: *user}
		for _, pkg := range fs.Args() {
			s.Binaries = append(s.Binaries, binary{Path: "/" + path.Base(filepath.ToSlash(pkg)), Package: pkg})
		}
		s.Entrypoint = []string{s.Binaries[0].Path}
	default:
		return fmt.Errorf("unknown image %q (operator, pause or build)", args[0])
	}
	if *tag != "" {
		s.Ref = *tag
	}
	if *out == "" || s.Ref == "" {
		return fmt.Errorf("%s: -o and a tag are required", args[0])
	}
	img, err := buildImage(context.Background(), repoRoot(), s, *arch, *out)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s %s\n", *out, s.Ref, img.Digest)
	return nil
}

// buildImage builds s's binaries from the repository at root and writes the
// archive to out (atomically).
func buildImage(ctx context.Context, root string, s spec, arch, out string) (image.Image, error) {
	tmp, err := os.MkdirTemp("", "nodeaccess-image")
	if err != nil {
		return image.Image{}, err
	}
	defer os.RemoveAll(tmp)
	var files []image.File
	for _, b := range s.Binaries {
		bin := filepath.Join(tmp, path.Base(b.Path))
		if err := image.GoBuild(ctx, root, b.Package, arch, bin); err != nil {
			return image.Image{}, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return image.Image{}, err
		}
		files = append(files, image.File{Path: b.Path, Mode: 0o755, Data: data})
	}
	var buf bytes.Buffer
	img, err := image.Write(&buf, image.Config{
		Ref: s.Ref, Entrypoint: s.Entrypoint, User: s.User, OS: "linux", Architecture: arch,
	}, files)
	if err != nil {
		return image.Image{}, fmt.Errorf("writing %s: %w", s.Ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return image.Image{}, err
	}
	part := out + ".part"
	if err := os.WriteFile(part, buf.Bytes(), 0o644); err != nil {
		return image.Image{}, err
	}
	return img, os.Rename(part, out)
}

// repoRoot is the repository's top directory: the go.mod the go command sees.
func repoRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			return filepath.Dir(mod)
		}
	}
	return "."
}
