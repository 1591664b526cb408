package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// CatalogUpTo writes into out a copy of the file-based catalog dir (one
// package folder, pkg, with package.yaml and one bundle-v<version>.yaml per
// release) that holds the releases up to and including csvName only, as the
// catalog stood when csvName was released, and validates it with opm.
func CatalogUpTo(dir, out, pkg, csvName, opm string) error {
	pkgDir := filepath.Join(out, pkg)
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return err
	}
	version := strings.TrimPrefix(csvName, pkg+".v")
	data, err := os.ReadFile(filepath.Join(dir, pkg, "package.yaml"))
	if err != nil {
		return err
	}
	truncated, err := truncateChannels(data, csvName)
	if err != nil {
		return fmt.Errorf("reading the catalog's channels: %w", err)
	}
	if err := os.WriteFile(filepath.Join(pkgDir, "package.yaml"), truncated, 0o644); err != nil {
		return err
	}
	name := "bundle-v" + version + ".yaml"
	bundle, err := os.ReadFile(filepath.Join(dir, pkg, name))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pkgDir, name), bundle, 0o644); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "opm-validate")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(opm, "validate", out)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("opm validate %s: %w: %s", out, err, b)
	}
	return nil
}

// truncateChannels keeps every channel's entries up to csvName.
func truncateChannels(data []byte, csvName string) ([]byte, error) {
	var out bytes.Buffer
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		doc := map[string]any{}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if doc["schema"] == "olm.channel" {
			entries, _ := doc["entries"].([]any)
			var keep []any
			for _, e := range entries {
				keep = append(keep, e)
				if m, ok := e.(map[string]any); ok && m["name"] == csvName {
					break
				}
			}
			doc["entries"] = keep
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes(), nil
}
