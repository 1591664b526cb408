package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// LDFlags strip the symbol table and give the binaries an empty build ID,
// which otherwise differs between build directories.
const LDFlags = "-s -w -buildid="

// GoBuild builds pkg, in the module at root, into out as the images ship
// it: one static, reproducible Linux binary for arch. GOFLAGS from the
// environment is dropped, so that nothing but these flags decides the
// bytes; whatever measures a binary (the bench) measures the shipped one.
func GoBuild(ctx context.Context, root, pkg, arch, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags="+LDFlags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(withoutGOFLAGS(os.Environ()), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = os.Stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func withoutGOFLAGS(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "GOFLAGS=") {
			out = append(out, e)
		}
	}
	return out
}
