package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The demo empties only a directory that is its own, never removes the
// directory itself, never follows a link out of it, and refuses, touching
// nothing, a -dir that is a link, the root directory, the repository or a
// directory above the binaries, or a directory of someone's files.
func TestDemoDirGuard(t *testing.T) {
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "repo")
	outside := filepath.Join(tmp, "outside")
	mustMkdir(t, filepath.Join(repo, "bin"), outside)
	mustWrite(t, filepath.Join(outside, "precious"), "keep me")
	base := config{root: repo, bin: filepath.Join(repo, "bin"), images: filepath.Join(repo, "bin", "image"), k8sBin: filepath.Join(repo, "bin", "k8s")}
	at := func(dir string) config { c := base; c.dir = dir; return c }

	marked := func(t *testing.T, dir string) {
		mustMkdir(t, filepath.Join(dir, "logs"), filepath.Join(dir, "cluster", "etcd"))
		mustWrite(t, filepath.Join(dir, demoMarker), "")
		mustWrite(t, filepath.Join(dir, "demo.pid"), "1")
		mustWrite(t, filepath.Join(dir, "cluster", "etcd", "db"), "x")
		if err := os.Symlink(outside, filepath.Join(dir, "cluster", "link")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T, dir string) string // makes the case, returns the -dir
		refused string                                // a part of the refusal; "" for none
		left    []string                              // what the -dir holds afterwards; nil: absent
	}{
		{"absent", func(t *testing.T, dir string) string { return dir }, "", nil},
		{"empty, made by the user", func(t *testing.T, dir string) string { mustMkdir(t, dir); return dir }, "", []string{}},
		{"a demo's", func(t *testing.T, dir string) string { marked(t, dir); return dir }, "", []string{}},
		{"the repository's _demo, from before the marker", func(t *testing.T, _ string) string {
			dir := filepath.Join(repo, "_demo")
			mustMkdir(t, filepath.Join(dir, "logs"))
			return dir
		}, "", []string{}},
		{"someone's files", func(t *testing.T, dir string) string {
			mustMkdir(t, dir)
			mustWrite(t, filepath.Join(dir, "demo.pid"), "not ours")
			mustWrite(t, filepath.Join(dir, "thesis.tex"), "years of work")
			return dir
		}, "not empty and not a demo's", []string{"demo.pid", "thesis.tex"}},
		{"a link to a demo's", func(t *testing.T, dir string) string {
			marked(t, dir+".real")
			if err := os.Symlink(dir+".real", dir); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "symbolic link", []string{demoMarker, "cluster", "demo.pid", "logs"}},
		{"a marker that is a link", func(t *testing.T, dir string) string {
			mustMkdir(t, dir)
			mustWrite(t, filepath.Join(dir, "thesis.tex"), "years of work")
			if err := os.Symlink(filepath.Join(outside, "precious"), filepath.Join(dir, demoMarker)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "not a file of this user", []string{demoMarker, "thesis.tex"}},
		{"a marker that is a directory", func(t *testing.T, dir string) string {
			mustMkdir(t, filepath.Join(dir, demoMarker))
			return dir
		}, "not a file of this user", []string{demoMarker}},
		{"a file", func(t *testing.T, dir string) string { mustWrite(t, dir, "x"); return dir }, "not a directory", nil},
		{"the repository", func(t *testing.T, _ string) string { mustWrite(t, filepath.Join(repo, demoMarker), ""); return repo }, "it is or holds " + repo, nil},
		{"above the binaries", func(t *testing.T, _ string) string { return filepath.Join(repo, "bin") }, "it is or holds " + filepath.Join(repo, "bin"), nil},
		{"the root directory", func(t *testing.T, _ string) string { return "/" }, "refusing / as the demo", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := at(tc.make(t, filepath.Join(tmp, strings.ReplaceAll(tc.name, " ", "-"))))
			for _, op := range []struct {
				name string
				do   func() error
			}{{"down", func() error { return down(c) }}, {"emptying", func() error { return clearDemoDir(c) }}} {
				err := op.do()
				switch {
				case tc.refused == "" && err != nil:
					t.Errorf("%s: %v", op.name, err)
				case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
					t.Errorf("%s: error %v, want a refusal saying %q", op.name, err, tc.refused)
				}
			}
			if readFile(filepath.Join(outside, "precious")) != "keep me" {
				t.Fatal("a file outside the demo's directory was removed")
			}
			if tc.left == nil && tc.refused == "" {
				if _, err := os.Lstat(c.dir); err == nil {
					t.Errorf("%s was made", c.dir)
				}
				return
			}
			if tc.left == nil {
				return // "/", the repository: checked by their refusal
			}
			entries, err := os.ReadDir(c.dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			slices.Sort(names)
			want := slices.Clone(tc.left)
			slices.Sort(want)
			if !slices.Equal(names, want) {
				t.Errorf("%s holds %q, want %q", c.dir, names, want)
			}
		})
	}
	for _, p := range []string{filepath.Join(repo, "bin"), filepath.Join(repo, demoMarker)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed", p)
		}
	}
}

// Mount points, escapes undone, and which of them lie under a directory.
func TestMountPoints(t *testing.T) {
	info := "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"90 22 0:50 / /work/repo/_demo\\040x/run rw - tmpfs tmpfs rw\n" +
		"short line\n"
	got, err := parseMountPoints(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/", "/work/repo/_demo x/run"}; !slices.Equal(got, want) {
		t.Fatalf("mount points %q, want %q", got, want)
	}
	for _, tc := range []struct {
		p, dir string
		want   bool
	}{
		{"/work/repo/_demo x/run", "/work/repo/_demo x", true},
		{"/work/repo/_demo x", "/work/repo/_demo x", true},
		{"/work/repo/_demo xy", "/work/repo/_demo x", false},
		{"/", "/work/repo/_demo x", false},
		{"/work/repo", "/", true},
		{"/work/..x", "/work", true},
	} {
		if got := within(tc.p, tc.dir); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.p, tc.dir, got, tc.want)
		}
	}
}

func mustMkdir(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func mustWrite(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
