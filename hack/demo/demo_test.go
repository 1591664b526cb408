package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// The demo as make demo runs it, in a directory of its own: with a real
// node where the machine has one (root, the node's Debian packages,
// kubelet and kube-proxy built; make test sees to all three), otherwise
// with its fake nodes and one line saying why. It returns and leaves the
// demo running; every hint it printed then works as printed, from a shell
// whose PATH has no kubectl, the real node's ssh login with the demo's key
// and with the user's own key included; and the stop command it printed
// leaves nothing behind: no process, no namespace, no cgroup of the node,
// the machine's mount table and its account database, /etc/cni, /var/lib
// and /var/log paths and root's ~/.ssh as they were.
func TestDemoUpAndDown(t *testing.T) {
	root := testenv.RepoRoot()
	tmp := t.TempDir()
	bin, images, dir := filepath.Join(tmp, "bin"), filepath.Join(tmp, "image"), filepath.Join(tmp, "_demo")
	k8sBin := os.Getenv("KUBEBUILDER_ASSETS")
	if k8sBin == "" {
		k8sBin = filepath.Join(root, "bin", "k8s")
	}
	withNode := os.Geteuid() == 0 && exec.Command(filepath.Join(root, "hack", "node-packages.sh"), "--check").Run() == nil
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(k8sBin, b)); err != nil {
			withNode = false
		}
	}
	builds := [][]string{
		{"go", "build", "-o", filepath.Join(bin, "manager"), "."},
		// One go build links the others side by side.
		{"go", "build", "-o", bin + "/", "./cmd/agent", "./cmd/kubectl-nodeaccess", "./hack/demo", "./hack/image"},
	}
	if withNode {
		builds = append(builds,
			[]string{filepath.Join(bin, "image"), "operator", "-tag", "quay.io/nodeaccess/nodeaccess-operator:demo-test", "-o", filepath.Join(images, operatorArchive)},
			[]string{filepath.Join(bin, "image"), "pause", "-o", filepath.Join(images, pauseArchive)})
	}
	start := time.Now()
	for _, b := range builds {
		command(t, root, nil, b...)
	}
	t.Logf("built the demo's binaries and images in %s", time.Since(start).Round(100*time.Millisecond))

	c := config{root: root, dir: dir}
	before := machineState(t, c)
	mode := "auto"
	if withNode {
		mode = "true" // fail rather than fall back
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "demo"), "-dir="+dir, "-bin="+bin, "-images="+images, "-real-node="+mode)
	demo.Dir, demo.Env = root, append(os.Environ(), "KUBEBUILDER_ASSETS="+k8sBin)
	var out bytes.Buffer
	demo.Stdout, demo.Stderr = &out, &out
	start = time.Now()
	err := demo.Run()
	t.Cleanup(func() {
		// Whatever failed, stop it.
		_ = exec.Command(filepath.Join(bin, "demo"), "-dir="+dir, "down").Run()
	})
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s%s", err, out.String(), readFile(filepath.Join(dir, "logs", "demo-up.log")), logTails(dir))
	}
	t.Logf("demo returned in %s", time.Since(start).Round(100*time.Millisecond))
	shown := out.String()

	noRealNode := 0
	for _, line := range strings.Split(shown, "\n") {
		if strings.HasPrefix(line, "No real node: ") {
			noRealNode++
		}
	}
	if withNode {
		for _, want := range []string{
			"real-1,198.18.255.1 ssh-ed25519 ",                                                                 // the known_hosts line from the report
			"UserKnownHostsFile " + filepath.Join(dir, "ssh", "known_hosts"),                                   // the ssh_config stanza
			"uid=2001(deploy) gid=2001(deploy)",                                                                // the login
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw5e0bmPa9oWfVhuMo4N2m0bYkGv2kAxc0Fq1yO0dNL ops-break-glass", // deploy's own line, kept
		} {
			if !strings.Contains(shown, want) {
				t.Errorf("the demo did not show %q:\n%s", want, shown)
			}
		}
		if noRealNode != 0 {
			t.Errorf("a real node ran, yet the demo said there was none:\n%s", shown)
		}
	} else if noRealNode != 1 {
		t.Errorf("without a real node the demo must say why in one line, it said so in %d:\n%s", noRealNode, shown)
	}

	// The hints, each run as printed after the first (export PATH=...).
	hints, stop := printedHints(t, shown)
	home := filepath.Join(tmp, "home")
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := localcluster.WriteKeyPair(filepath.Join(home, ".ssh", "id_ed25519"), "me@workstation"); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+pathWithoutKubectl(t, tmp), "HOME="+home, "EDITOR=true")
	if o, err := shellLine(root, env, "", "command -v kubectl"); err == nil {
		t.Fatalf("kubectl is still on the PATH the hints run with: %s", o)
	}
	logins := 0
	start = time.Now()
	for _, h := range hints[1:] {
		stdin := ""
		if strings.HasPrefix(h, "node-ssh ") {
			stdin = "id -un\n" // the shell it opens reads this
			logins++
		}
		o, err := shellLine(root, env, stdin, hints[0]+"\n"+h)
		if err != nil {
			t.Errorf("hint %q: %v\n%s", h, err, o)
			continue
		}
		if stdin != "" && !strings.Contains(o, "deploy\n") {
			t.Errorf("hint %q did not log in as deploy:\n%s", h, o)
		}
	}
	t.Logf("ran the %d hints in %s", len(hints), time.Since(start).Round(100*time.Millisecond))
	if withNode && logins != 2 {
		t.Errorf("the hints logged in to the real node %d times, want 2 (the demo's key and the user's own): %v", logins, hints)
	}

	var nsInodes []string
	if withNode {
		pid := strings.TrimSpace(readFile(filepath.Join(dir, "namespaces", "init.pid")))
		for _, ns := range []string{"net", "pid_for_children", "mnt"} {
			link, err := os.Readlink("/proc/" + pid + "/ns/" + ns)
			if err != nil {
				t.Fatalf("the namespaces' init (%q): %v", pid, err)
			}
			nsInodes = append(nsInodes, link)
		}
	}
	start = time.Now()
	if o, err := shellLine(root, env, "", stop); err != nil {
		t.Fatalf("%s: %v\n%s", stop, err, o)
	}
	t.Logf("%s took %s", stop, time.Since(start).Round(100*time.Millisecond))

	if left := processesOf(tmp, nsInodes); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
	after := machineState(t, c)
	if added, removed := diff(before, after); len(added)+len(removed) > 0 {
		t.Errorf("the machine changed: now %v, was %v", added, removed)
	}
	for _, f := range []string{"demo.pid", "ready.json", "namespaces/init.pid"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s is left", f)
		}
	}
}

// printedHints are the command lines under the demo's last heading, and
// the command it said stops it.
func printedHints(t *testing.T, shown string) (hints []string, stop string) {
	t.Helper()
	_, tail, ok := strings.Cut(shown, "==> The demo keeps running.")
	if !ok {
		t.Fatalf("no hints in:\n%s", shown)
	}
	for _, line := range strings.Split(tail, "\n") {
		if cmd, ok := strings.CutPrefix(line, "    "); ok {
			hints = append(hints, strings.TrimSpace(cmd))
		}
		if s, ok := strings.CutPrefix(line, "Stop everything with: "); ok {
			stop, _, _ = strings.Cut(s, " (logs in ")
		}
	}
	if len(hints) < 3 || !strings.HasPrefix(hints[0], "export PATH=") || stop == "" {
		t.Fatalf("the hints do not start by putting the wrappers on PATH, or say no stop command: %q, %q", hints, stop)
	}
	return hints, stop
}

// shellLine runs a command line with /bin/sh in dir, as a user would type it.
func shellLine(dir string, env []string, stdin, line string) (string, error) {
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Dir, cmd.Env, cmd.Stdin = dir, env, strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pathWithoutKubectl is this PATH with every directory that holds a
// kubectl replaced by one of links to everything else in it.
func pathWithoutKubectl(t *testing.T, tmp string) string {
	t.Helper()
	var dirs []string
	for i, d := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(d, "kubectl")); err != nil {
			dirs = append(dirs, d)
			continue
		}
		shadow := filepath.Join(tmp, "path", strconv.Itoa(i))
		if err := os.MkdirAll(shadow, 0o755); err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "kubectl" {
				if err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(shadow, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		dirs = append(dirs, shadow)
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// processesOf lists the processes that run a program under dir, name dir
// in their command line, or live in one of the namespaces.
func processesOf(dir string, namespaces []string) []string {
	entries, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p := "/proc/" + e.Name()
		cmdline, _ := os.ReadFile(p + "/cmdline")
		exe, _ := os.Readlink(p + "/exe")
		mine := strings.HasPrefix(exe, dir) || bytes.Contains(cmdline, []byte(dir))
		for _, ns := range []string{"net", "pid", "mnt"} {
			if link, err := os.Readlink(p + "/ns/" + ns); err == nil && slices.Contains(namespaces, link) {
				mine = true
			}
		}
		if mine {
			left = append(left, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return left
}

// machinePaths are the machine's files and directories a real node's
// programs and ssh would write if they escaped the namespaces.
var machinePaths = []string{
	"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/cni", "/root/.ssh", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni",
	"/var/log/auth.log", "/var/log/pods", "/var/log/containers", "/usr/libexec/kubernetes", "/run/containerd", "/run/netns", "/run/sshd",
}

// machineState is the machine's mount table (point, type, source), what
// each of machinePaths is (absent, a directory, or a file's hash), and the
// demo's real-node cgroups in every hierarchy.
func machineState(t *testing.T, c config) []string {
	t.Helper()
	var state []string
	for _, p := range machinePaths {
		s := p + " absent"
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			s = fmt.Sprintf("%s file %x", p, sha256.Sum256([]byte(readFile(p))))
		} else if err == nil {
			s = p + " " + fi.Mode().Type().String()
		}
		state = append(state, s)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(rest) < 2 {
			continue
		}
		state = append(state, "mount "+fields[4]+" "+rest[0]+" "+rest[1])
		if rest[0] == "cgroup" || rest[0] == "cgroup2" {
			if _, err := os.Stat(filepath.Join(fields[4], c.cgroupName())); err == nil {
				state = append(state, "cgroup "+filepath.Join(fields[4], c.cgroupName()))
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(state)
	return state
}

// diff says what b has that a lacks, and what a has that b lacks.
func diff(a, b []string) (added, removed []string) {
	for _, x := range b {
		if !slices.Contains(a, x) {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func command(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// logTails are the last lines of the real node's logs, for a failure.
func logTails(dir string) string {
	logs, _ := filepath.Glob(filepath.Join(dir, "real-node", "logs", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		lines := strings.Split(strings.TrimSpace(readFile(l)), "\n")
		fmt.Fprintf(&b, "\n--- the last lines of %s:\n%s\n", l, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

func readFile(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}
