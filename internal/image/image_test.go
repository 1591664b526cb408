package image

import (
	"archive/tar"
	"bytes"
	"slices"
	"strings"
	"testing"
)

var baseConfig = Config{
	Ref: "example.com/org/app:1.0", Entrypoint: []string{"/app"}, User: "65532:65532",
	OS: "linux", Architecture: "amd64",
}

func write(t *testing.T, cfg Config, files []File) ([]byte, Image) {
	t.Helper()
	var buf bytes.Buffer
	img, err := Write(&buf, cfg, files)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), img
}

func TestWriteThenRead(t *testing.T) {
	files := []File{
		{Path: "/app", Mode: 0o755, Data: []byte("binary")},
		{Path: "/etc/app/config", Mode: 0o644, UID: 10, GID: 20, Data: []byte("k=v\n")},
	}
	data, img := write(t, baseConfig, files)
	a, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != img.Digest || a.Manifest.Config.Digest != img.ConfigDigest || a.Manifest.Layers[0].Digest != img.LayerDigest {
		t.Errorf("digests read %s/%s differ from written %+v", a.Digest, a.Manifest.Config.Digest, img)
	}
	if !slices.Equal(a.Refs, []string{baseConfig.Ref}) {
		t.Errorf("refs %v", a.Refs)
	}
	c := a.Config
	if c.OS != "linux" || c.Architecture != "amd64" || !slices.Equal(c.Config.Entrypoint, []string{"/app"}) || c.Config.User != "65532:65532" || c.Config.WorkingDir != "/" {
		t.Errorf("config %+v", c)
	}
	if len(c.RootFS.DiffIDs) != 1 || c.RootFS.DiffIDs[0] != img.LayerDigest {
		t.Errorf("diff IDs %v, layer %s", c.RootFS.DiffIDs, img.LayerDigest)
	}
	var paths []string
	for p := range a.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	if want := []string{"/app", "/etc/", "/etc/app/", "/etc/app/config"}; !slices.Equal(paths, want) {
		t.Errorf("layer entries %v, want %v", paths, want)
	}
	cfgFile := a.Files["/etc/app/config"]
	if cfgFile.Uid != 10 || cfgFile.Gid != 20 || cfgFile.Mode != 0o644 || !cfgFile.ModTime.Equal(Epoch) {
		t.Errorf("config file header %+v", cfgFile)
	}
	if app := a.Files["/app"]; app.Uid != 0 || app.Gid != 0 || app.Mode != 0o755 || app.Uname != "" {
		t.Errorf("app header %+v", app)
	}
}

// The same input gives the same bytes whatever the order of the files;
// any change to a file, its mode or the config changes the digest.
func TestDigestIsAFunctionOfTheInputOnly(t *testing.T) {
	a := File{Path: "/a", Mode: 0o755, Data: []byte("a")}
	b := File{Path: "/dir/b", Mode: 0o644, Data: []byte("b")}
	ref, img := write(t, baseConfig, []File{a, b})
	again, img2 := write(t, baseConfig, []File{b, a})
	if !bytes.Equal(ref, again) || img != img2 {
		t.Fatalf("two writes of the same image differ: %+v %+v", img, img2)
	}
	changed := func(f func(*Config, *File)) Image {
		cfg, fb := baseConfig, b
		cfg.Entrypoint = slices.Clone(cfg.Entrypoint)
		f(&cfg, &fb)
		_, img := write(t, cfg, []File{a, fb})
		return img
	}
	for name, mutate := range map[string]func(*Config, *File){
		"content":    func(_ *Config, f *File) { f.Data = []byte("B") },
		"mode":       func(_ *Config, f *File) { f.Mode = 0o600 },
		"owner":      func(_ *Config, f *File) { f.UID = 1 },
		"path":       func(_ *Config, f *File) { f.Path = "/dir/c" },
		"entrypoint": func(c *Config, _ *File) { c.Entrypoint = []string{"/a"} },
		"user":       func(c *Config, _ *File) { c.User = "0:0" },
		"arch":       func(c *Config, _ *File) { c.Architecture = "arm64" },
	} {
		if got := changed(mutate); got.Digest == img.Digest {
			t.Errorf("changing the %s kept the digest %s", name, got.Digest)
		}
	}
	// The tag is not part of the image: another ref, same digest.
	if got := changed(func(c *Config, _ *File) { c.Ref = "other.example/x:2" }); got.Digest != img.Digest {
		t.Errorf("changing the tag changed the manifest digest")
	}
}

func TestArchiveLayout(t *testing.T) {
	data, img := write(t, baseConfig, []File{{Path: "/app", Mode: 0o755, Data: []byte("x")}})
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(Epoch) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("entry %s: %+v", h.Name, h)
		}
	}
	hex := func(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
	want := []string{"blobs/", "blobs/sha256/", hex(img.ConfigDigest), hex(img.LayerDigest), hex(img.Digest), "index.json", "manifest.json", "oci-layout"}
	if !slices.Equal(names, want) {
		t.Errorf("archive entries %v, want %v", names, want)
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*Config)
		files []File
		want  string
	}{
		{"relative path", nil, []File{{Path: "app", Mode: 0o755}}, "not a clean absolute path"},
		{"unclean path", nil, []File{{Path: "/x/../app", Mode: 0o755}}, "not a clean absolute path"},
		{"root", nil, []File{{Path: "/", Mode: 0o755}}, "not a clean absolute path"},
		{"twice", nil, []File{{Path: "/app", Mode: 0o755}, {Path: "/app", Mode: 0o755}}, "given twice"},
		{"file and directory", nil, []File{{Path: "/app", Mode: 0o755}, {Path: "/app/x", Mode: 0o755}}, "both a file and a directory"},
		{"setuid is fine, file type is not", nil, []File{{Path: "/app", Mode: 0o40755}}, "more than permission bits"},
		{"no platform", func(c *Config) { c.OS = "" }, nil, "OS and an architecture"},
		{"no entrypoint", func(c *Config) { c.Entrypoint = nil }, nil, "entrypoint or a command"},
		{"no ref", func(c *Config) { c.Ref = "" }, nil, "not a tag"},
		{"ref with space", func(c *Config) { c.Ref = "a b" }, nil, "not a tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			_, err := Write(&bytes.Buffer{}, cfg, tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReadRefusesATamperedBlob(t *testing.T) {
	data, _ := write(t, baseConfig, []File{{Path: "/app", Mode: 0o755, Data: []byte("original")}})
	tampered := bytes.Replace(data, []byte("original"), []byte("replaced"), 1)
	if bytes.Equal(tampered, data) {
		t.Fatal("test did not tamper")
	}
	if _, err := Read(bytes.NewReader(tampered)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error %v", err)
	}
}

func TestTagOf(t *testing.T) {
	for ref, want := range map[string]string{
		"quay.io/org/name:1.0": "1.0", "localhost:5000/name": "latest", "localhost:5000/name:v2": "v2", "name": "latest",
	} {
		if got := tagOf(ref); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", ref, got, want)
		}
	}
}
