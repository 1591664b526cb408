package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/nodeaccess/nodeaccess-operator/internal/image"
)

// dockerfile is what the final stage of a Dockerfile says about its image,
// and how its builder stage builds each binary.
type dockerfile struct {
	from       string
	copies     map[string]string // image path -> builder path
	user       string
	entrypoint []string
	env        string
	builds     map[string]string // builder output -> "flags package"
}

func parseDockerfile(t *testing.T, file string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines, drop comments.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	d := dockerfile{copies: map[string]string{}, builds: map[string]string{}}
	for _, line := range lines {
		fields := strings.Fields(line)
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			d.from = fields[1]
			d.copies, d.user, d.entrypoint = map[string]string{}, "", nil
		case "COPY":
			if len(fields) == 4 && fields[1] == "--from=builder" {
				d.copies[fields[3]] = fields[2]
			}
		case "USER":
			d.user = fields[1]
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimSpace(line[len("ENTRYPOINT"):])), &d.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT is not exec form: %v", err)
			}
		case "ENV":
			d.env = strings.Join(fields[1:], " ")
		case "RUN":
			for _, cmd := range strings.Split(strings.TrimSpace(line[len("RUN"):]), "&&") {
				f := strings.Fields(cmd)
				if len(f) < 2 || f[0] != "go" || f[1] != "build" {
					continue
				}
				var flags []string
				out, pkg := "", f[len(f)-1]
				for i := 2; i < len(f)-1; i++ {
					if f[i] == "-o" {
						out = f[i+1]
						i++
						continue
					}
					flags = append(flags, f[i])
				}
				d.builds[out] = strings.Join(flags, " ") + " " + pkg
			}
		}
	}
	return d
}

// The Dockerfile, for people with docker, describes the image make image
// builds: FROM scratch, the same files from the same packages built with
// the same flags, the same user and entrypoint.
func TestDockerfileDescribesTheSameImage(t *testing.T) {
	d := parseDockerfile(t, filepath.Join(repoRoot(), "Dockerfile"))
	if d.from != "scratch" {
		t.Errorf("final stage FROM %s, want scratch", d.from)
	}
	if d.user != operator.User {
		t.Errorf("Dockerfile USER %s, image %s", d.user, operator.User)
	}
	if !slices.Equal(d.entrypoint, operator.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %v, image %v", d.entrypoint, operator.Entrypoint)
	}
	if len(d.copies) != len(operator.Binaries) {
		t.Errorf("Dockerfile copies %v, image has %v", d.copies, operator.Binaries)
	}
	for _, b := range operator.Binaries {
		src, ok := d.copies[b.Path]
		if !ok {
			t.Errorf("Dockerfile does not copy %s", b.Path)
			continue
		}
		build, ok := d.builds[filepath.Base(src)]
		if want := `-trimpath -buildvcs=false -ldflags="` + image.LDFlags + `" ` + b.Package; !ok || build != want {
			t.Errorf("Dockerfile builds %s with %q, image with %q", b.Path, build, want)
		}
	}
	for _, env := range []string{"CGO_ENABLED=0", "GOFLAGS="} {
		if !slices.Contains(strings.Fields(d.env), env) {
			t.Errorf("Dockerfile ENV %q lacks %s", d.env, env)
		}
	}
}

// make image gives an archive holding exactly the three static binaries
// (no shell, nothing else), runnable on this platform as the non-root user,
// and the same bytes, so the same digest, when built twice.
func TestOperatorImageArchive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := operator
	s.Ref = "example.com/nodeaccess-operator:test"
	first, second := filepath.Join(dir, "1.tar"), filepath.Join(dir, "2.tar")
	img, err := buildImage(ctx, repoRoot(), s, runtime.GOARCH, first)
	if err != nil {
		t.Fatal(err)
	}
	img2, err := buildImage(ctx, repoRoot(), s, runtime.GOARCH, second)
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustRead(t, first), mustRead(t, second)
	if img.Digest != img2.Digest || !bytes.Equal(a, b) {
		t.Fatalf("two builds of the same tree differ: %s and %s", img.Digest, img2.Digest)
	}
	archive, err := image.Read(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if archive.Digest != img.Digest || !slices.Equal(archive.Refs, []string{s.Ref}) {
		t.Errorf("archive names %v %s, want %s %s", archive.Refs, archive.Digest, s.Ref, img.Digest)
	}
	c := archive.Config
	if c.OS != "linux" || c.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", c.OS, c.Architecture)
	}
	if !slices.Equal(c.Config.Entrypoint, []string{"/manager"}) || c.Config.User != "65532:65532" || len(c.Config.Cmd) != 0 {
		t.Errorf("config %+v", c.Config)
	}
	var paths []string
	for p := range archive.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	if want := []string{"/agent", "/manager", "/nodeaccess-scorecard"}; !slices.Equal(paths, want) {
		t.Fatalf("image files %v, want exactly %v (no shell, nothing else)", paths, want)
	}
	for _, p := range []string{"/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/env"} {
		if _, ok := archive.Files[p]; ok {
			t.Errorf("image has %s", p)
		}
	}
	for _, p := range paths {
		h := archive.Files[p]
		if h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || h.Size == 0 {
			t.Errorf("%s: mode %o owner %d:%d size %d", p, h.Mode, h.Uid, h.Gid, h.Size)
		}
	}
	// Static: the binaries ask for no dynamic loader.
	for _, p := range paths {
		f, err := elf.NewFile(bytes.NewReader(archive.Contents[p]))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked", p)
			}
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
