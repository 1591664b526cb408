package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Archive is an image archive as Read found it.
type Archive struct {
	// Refs are the tags manifest.json gives the image.
	Refs []string
	// Digest is the manifest's digest, as index.json names it.
	Digest   string
	Manifest Manifest
	Config   ConfigFile
	// Files are the layer's entries by absolute path ("/manager"; directories end in "/").
	Files map[string]*tar.Header
	// Contents are the regular files' bytes, by the same paths.
	Contents map[string][]byte
}

// Read parses an archive Write wrote (one image, one layer) and checks that
// every blob matches its digest.
func Read(r io.Reader) (*Archive, error) {
	entries := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", h.Name, err)
		}
		entries[h.Name] = data
	}
	blob := func(d Descriptor) ([]byte, error) {
		data, ok := entries[blobPath(d.Digest)]
		if !ok {
			return nil, fmt.Errorf("blob %s missing", d.Digest)
		}
		if Digest(data) != d.Digest || int64(len(data)) != d.Size {
			return nil, fmt.Errorf("blob %s does not match its digest or size", d.Digest)
		}
		return data, nil
	}
	a := &Archive{Files: map[string]*tar.Header{}, Contents: map[string][]byte{}}
	var index struct{ Manifests []Descriptor }
	if err := json.Unmarshal(entries["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		return nil, fmt.Errorf("index.json does not name one manifest (%v)", err)
	}
	a.Digest = index.Manifests[0].Digest
	data, err := blob(index.Manifests[0])
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &a.Manifest); err != nil || len(a.Manifest.Layers) != 1 {
		return nil, fmt.Errorf("the manifest does not name one layer (%v)", err)
	}
	if data, err = blob(a.Manifest.Config); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &a.Config); err != nil {
		return nil, fmt.Errorf("decoding the config: %w", err)
	}
	layer, err := blob(a.Manifest.Layers[0])
	if err != nil {
		return nil, err
	}
	var docker []dockerManifest
	if err := json.Unmarshal(entries["manifest.json"], &docker); err != nil || len(docker) != 1 {
		return nil, fmt.Errorf("manifest.json does not describe one image (%v)", err)
	}
	if docker[0].Config != blobPath(a.Manifest.Config.Digest) || len(docker[0].Layers) != 1 || docker[0].Layers[0] != blobPath(a.Manifest.Layers[0].Digest) {
		return nil, errors.New("manifest.json and the OCI manifest name different blobs")
	}
	a.Refs = docker[0].RepoTags
	lr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := lr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the layer: %w", err)
		}
		name := "/" + strings.TrimPrefix(h.Name, "./")
		a.Files[name] = h
		if h.Typeflag == tar.TypeReg {
			if a.Contents[name], err = io.ReadAll(lr); err != nil {
				return nil, fmt.Errorf("reading %s from the layer: %w", name, err)
			}
		}
	}
	return a, nil
}
