package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// Why no real node runs: the first reason that holds, in one line.
func TestBlocker(t *testing.T) {
	ok := facts{mode: "auto", root: true}
	for _, tc := range []struct {
		name string
		f    facts
		want string // a part of the reason; "" for none
	}{
		{"everything there", ok, ""},
		{"required and there", facts{mode: "true", root: true}, ""},
		{"turned off", facts{mode: "false", root: true}, "turned off (DEMO_REAL_NODE=false)"},
		{"turned off beats not root", facts{mode: "false"}, "turned off"},
		{"not root", facts{mode: "auto"}, "it needs root"},
		{"no namespaces", facts{mode: "auto", root: true, namespaces: errors.New("operation not\npermitted"), cgroups: errors.New("x")},
			"namespaces cannot be made here (operation not permitted)"},
		{"cgroups read-only", facts{mode: "auto", root: true, cgroups: errors.New("cgroup hierarchy /sys/fs/cgroup/cpu is not writable: read-only file system")},
			"cgroups are unusable here (cgroup hierarchy /sys/fs/cgroup/cpu is not writable: read-only file system)"},
		{"packages missing", facts{mode: "auto", root: true, packages: "missing Debian packages: containerd runc (run hack/node-packages.sh as root to install them)", missing: []string{"bin/k8s/kubelet"}},
			"missing Debian packages: containerd runc"},
		{"not built", facts{mode: "auto", root: true, missing: []string{"bin/k8s/kubelet", "bin/image/pause.tar"}},
			"no bin/k8s/kubelet, bin/image/pause.tar (make demo builds them as root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := blocker(tc.f)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("blocker = %q, want none", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("blocker = %q, want it to say %q", got, tc.want)
			case strings.Contains(got, "\n"):
				t.Errorf("blocker = %q: more than one line", got)
			}
		})
	}
}

// A quoted word is the same word to the shell, whatever it holds.
func TestShellQuoting(t *testing.T) {
	for _, s := range []string{"/plain/path", "with space", "it's", `"$HOME" and $(id) and ;|&<>*?`, "new\nline", ""} {
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+shq(s)).Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if string(out) != s {
			t.Errorf("shq(%q) = %s, which the shell reads as %q", s, shq(s), out)
		}
	}
	c := config{root: "/repo"}
	for p, want := range map[string]string{
		"/repo/_demo/bin": "_demo/bin", "/elsewhere/x": "/elsewhere/x", "/repo-other/x": "/repo-other/x", "/repo/a b": "'a b'",
	} {
		if got := display(c, p); got != want {
			t.Errorf("display(%q) = %q, want %q", p, got, want)
		}
	}
}
