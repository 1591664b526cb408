package localcluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// kwokStages are the Stage definitions kwok needs to bring fake nodes up,
// keep their leases and make pods Ready, complete and go away. kwok ships
// them in its module; they are read from the module cache, not copied.
var kwokStages = []string{
	"kustomize/stage/node/fast/node-initialize.yaml",
	"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"kustomize/stage/pod/fast/pod-ready.yaml",
	"kustomize/stage/pod/fast/pod-complete.yaml",
	"kustomize/stage/pod/fast/pod-delete.yaml",
}

// WriteKwokStages writes kwok's configuration to path, from the kwok module
// that hack/tools/kwok pins (downloaded from the Go module proxy).
func WriteKwokStages(repoRoot, path string) error {
	// go mod download, not go list -m: the module's files may be missing
	// from this user's module cache although bin/k8s/kwok is built.
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/kwok")
	cmd.Dir = filepath.Join(repoRoot, "hack", "tools", "kwok")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("finding the kwok module: %w: %s%s", err, stderr.String(), out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("finding the kwok module: %v %s", err, mod.Error)
	}
	dir := mod.Dir
	var config bytes.Buffer
	for _, stage := range kwokStages {
		data, err := os.ReadFile(filepath.Join(dir, stage))
		if err != nil {
			return fmt.Errorf("reading kwok stage: %w", err)
		}
		config.WriteString("---\n")
		config.Write(data)
		config.WriteString("\n")
	}
	return os.WriteFile(path, config.Bytes(), 0o600)
}
