// Package image writes a one-layer container image as an archive that
// containerd (`ctr images import`) and docker (`docker load`) import, with no
// daemon and no registry. The archive holds both layouts those tools read:
// the OCI image layout (oci-layout, index.json, blobs/sha256/...) and the
// docker-save manifest.json beside it, naming the same blobs.
//
// Everything in it is a pure function of the files and the config given:
// entries sorted, owners 0:0 unless a file says otherwise, fixed
// modification times, no creation timestamps. The same input gives the
// same bytes, so the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every entry: the start of 1970, as
// reproducible builds agree to use when no other date is given.
var Epoch = time.Unix(0, 0).UTC()

// Media types of what the archive holds.
const (
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
)

// File is one entry of the image's only layer.
type File struct {
	// Path is where the file is in the image, absolute ("/manager").
	Path string
	// Mode is its permission bits (0o755 for a program).
	Mode int64
	// UID and GID own it (0 by default).
	UID, GID int
	// Data is its content.
	Data []byte
}

// Config is what a container of the image runs, and where.
type Config struct {
	// Ref names the image, as a tag ("quay.io/org/name:1.0").
	Ref string
	// Entrypoint is the program and its first arguments.
	Entrypoint []string
	// Cmd are the default arguments after Entrypoint.
	Cmd []string
	// User is "uid:gid" (numeric, so no /etc/passwd is needed), or empty for root.
	User string
	// Env holds "NAME=value" entries.
	Env []string
	// WorkingDir is the working directory ("/" when empty).
	WorkingDir string
	// Labels are the image's labels.
	Labels map[string]string
	// OS and Architecture are the platform ("linux", "amd64").
	OS, Architecture string
}

// Descriptor points at a blob by digest.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// ConfigFile is the image configuration blob (OCI and docker agree on it).
type ConfigFile struct {
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Config       ContainerSpec `json:"config"`
	RootFS       RootFS        `json:"rootfs"`
}

// ContainerSpec is the part of ConfigFile a container runs with.
type ContainerSpec struct {
	User       string            `json:"User,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// RootFS lists the uncompressed layers' digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// dockerManifest is one entry of a docker-save manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Image is what Write wrote: the digests a registry or runtime would show.
type Image struct {
	// Digest is the manifest's digest (what `ctr images ls` shows).
	Digest string
	// ConfigDigest is the image ID (what the kubelet reports as imageID).
	ConfigDigest string
	// LayerDigest is the only layer's digest (uncompressed).
	LayerDigest string
}

// Write writes the image archive of files and cfg to w.
func Write(w io.Writer, cfg Config, files []File) (Image, error) {
	if err := validate(cfg); err != nil {
		return Image{}, err
	}
	layer, err := Layer(files)
	if err != nil {
		return Image{}, err
	}
	layerDesc := describe(MediaTypeLayer, layer)
	workdir := cfg.WorkingDir
	if workdir == "" {
		workdir = "/"
	}
	config, err := json.Marshal(ConfigFile{
		Architecture: cfg.Architecture,
		OS:           cfg.OS,
		Config: ContainerSpec{
			User: cfg.User, Env: cfg.Env, Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd,
			WorkingDir: workdir, Labels: cfg.Labels,
		},
		RootFS: RootFS{Type: "layers", DiffIDs: []string{layerDesc.Digest}},
	})
	if err != nil {
		return Image{}, fmt.Errorf("encoding the image config: %w", err)
	}
	configDesc := describe(MediaTypeConfig, config)
	manifest, err := json.Marshal(Manifest{
		SchemaVersion: 2, MediaType: MediaTypeManifest, Config: configDesc, Layers: []Descriptor{layerDesc},
	})
	if err != nil {
		return Image{}, fmt.Errorf("encoding the image manifest: %w", err)
	}
	manifestDesc := describe(MediaTypeManifest, manifest)
	manifestDesc.Annotations = map[string]string{"io.containerd.image.name": cfg.Ref, "org.opencontainers.image.ref.name": tagOf(cfg.Ref)}
	index, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []Descriptor `json:"manifests"`
	}{2, MediaTypeIndex, []Descriptor{manifestDesc}})
	if err != nil {
		return Image{}, fmt.Errorf("encoding the image index: %w", err)
	}
	docker, err := json.Marshal([]dockerManifest{{
		Config: blobPath(configDesc.Digest), RepoTags: []string{cfg.Ref}, Layers: []string{blobPath(layerDesc.Digest)},
	}})
	if err != nil {
		return Image{}, fmt.Errorf("encoding manifest.json: %w", err)
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"blobs/", nil},
		{"blobs/sha256/", nil},
		{blobPath(configDesc.Digest), config},
		{blobPath(layerDesc.Digest), layer},
		{blobPath(manifestDesc.Digest), manifest},
		{"index.json", index},
		{"manifest.json", docker},
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return Image{}, fmt.Errorf("writing %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return Image{}, fmt.Errorf("writing %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return Image{}, fmt.Errorf("closing the archive: %w", err)
	}
	return Image{Digest: manifestDesc.Digest, ConfigDigest: configDesc.Digest, LayerDigest: layerDesc.Digest}, nil
}

func validate(cfg Config) error {
	switch {
	case cfg.Ref == "" || strings.ContainsAny(cfg.Ref, " \t\n"):
		return fmt.Errorf("image reference %q is not a tag", cfg.Ref)
	case cfg.OS == "" || cfg.Architecture == "":
		// containerd filters out images without a platform.
		return errors.New("image config needs an OS and an architecture")
	case len(cfg.Entrypoint) == 0 && len(cfg.Cmd) == 0:
		return errors.New("image config needs an entrypoint or a command")
	}
	return nil
}

// Layer returns the uncompressed layer tar of files: every parent directory
// made explicit (0755, root), entries sorted by path, fixed times.
func Layer(files []File) ([]byte, error) {
	byPath := map[string]File{}
	dirs := map[string]bool{}
	for _, f := range files {
		clean := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || clean != f.Path || clean == "/" {
			return nil, fmt.Errorf("file path %q is not a clean absolute path", f.Path)
		}
		if _, dup := byPath[clean]; dup {
			return nil, fmt.Errorf("file %s given twice", clean)
		}
		if f.Mode&^0o7777 != 0 {
			return nil, fmt.Errorf("file %s: mode %o has more than permission bits", clean, f.Mode)
		}
		byPath[clean] = f
		for d := path.Dir(clean); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if _, isFile := byPath[d]; isFile {
			return nil, fmt.Errorf("%s is both a file and a directory", d)
		}
	}
	names := make([]string, 0, len(byPath)+len(dirs))
	for p := range byPath {
		names = append(names, p)
	}
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		rel := strings.TrimPrefix(name, "/")
		h := &tar.Header{Name: rel + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: Epoch, Format: tar.FormatPAX}
		if f, ok := byPath[name]; ok {
			h = &tar.Header{Name: rel, Mode: f.Mode, Uid: f.UID, Gid: f.GID, Size: int64(len(f.Data)), Typeflag: tar.TypeReg, ModTime: Epoch, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing layer entry %s: %w", name, err)
		}
		if f, ok := byPath[name]; ok {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("writing layer entry %s: %w", name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing the layer: %w", err)
	}
	return buf.Bytes(), nil
}

func describe(mediaType string, data []byte) Descriptor {
	return Descriptor{MediaType: mediaType, Digest: Digest(data), Size: int64(len(data))}
}

// Digest is data's "sha256:<hex>" digest.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// tagOf is the tag part of a reference ("1.0" of "quay.io/org/name:1.0"),
// or "latest" when it has none.
func tagOf(ref string) string {
	name := ref
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		name = ref[i+1:]
	}
	if i := strings.LastIndex(name, ":"); i >= 0 {
		return name[i+1:]
	}
	return "latest"
}
