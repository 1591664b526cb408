package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// writeWrappers writes the scripts of config.wrappers(), through which a
// user's shell reaches the demo with nothing else on PATH:
//
//	demo-exec CMD...       runs CMD where the cluster is reachable: with a
//	                       real node, in its network namespace (the API
//	                       server listens only there), entered with nsenter
//	kubectl                bin/k8s/kubectl with the demo's kubeconfig, the
//	                       wrappers first on PATH (so `kubectl nodeaccess` works)
//	kubectl-nodeaccess     the plugin (bin/kubectl-nodeaccess), the same way
//	node-ssh               with a real node: ssh with the ssh_config and
//	                       known_hosts that `kubectl nodeaccess` wrote
//
// inNamespaces says that the cluster runs in private namespaces, withNode that
// the real node runs there too. Every path in the scripts is absolute and
// quoted, whatever it holds.
func writeWrappers(c config, inNamespaces, withNode bool) error {
	dir := c.wrappers()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	demoExec := filepath.Join(dir, "demo-exec")
	kubeconfig := "export KUBECONFIG=" + shq(c.kubeconfig()) + "\n"
	scripts := map[string]string{
		"kubectl": "# kubectl against the nodeaccess demo's cluster: bin/k8s/kubectl with its\n" +
			"# kubeconfig, and the demo's wrappers first on PATH for `kubectl nodeaccess`.\n" +
			kubeconfig +
			"PATH=" + shq(dir) + ":$PATH\nexport PATH\n" +
			"exec " + shq(demoExec) + " " + shq(filepath.Join(c.k8sBin, "kubectl")) + " \"$@\"\n",
		"kubectl-nodeaccess": "# The nodeaccess kubectl plugin against the demo's cluster (bin/kubectl-nodeaccess).\n" +
			kubeconfig +
			"exec " + shq(demoExec) + " " + shq(filepath.Join(c.bin, "kubectl-nodeaccess")) + " \"$@\"\n",
	}
	if inNamespaces {
		scripts["demo-exec"] = "# demo-exec COMMAND [ARG...]: run COMMAND where the nodeaccess demo's cluster\n" +
			"# is reachable: in the private network namespace it runs in (with its real\n" +
			"# node), where its API server listens. Entering it needs root.\n" +
			"pid=$(cat " + shq(filepath.Join(c.nsDir(), "init.pid")) + " 2>/dev/null) || {\n" +
			"\techo \"demo-exec: the demo is not running (start it with make demo)\" >&2\n" +
			"\texit 1\n" +
			"}\n" +
			"if [ \"$(readlink /proc/self/ns/net)\" = \"$(readlink \"/proc/$pid/ns/net\" 2>/dev/null)\" ]; then\n" +
			"\texec \"$@\"\n" +
			"fi\n" +
			"if [ \"$(id -u)\" != 0 ]; then\n" +
			"\techo \"demo-exec: the demo's cluster is in private namespaces, and entering them needs root\" >&2\n" +
			"\texit 1\n" +
			"fi\n" +
			"exec " + shq(lookPath("nsenter", "/usr/bin/nsenter")) + " --target \"$pid\" --net -- \"$@\"\n"
	} else {
		scripts["demo-exec"] = "# demo-exec COMMAND [ARG...]: run COMMAND against the nodeaccess demo's cluster,\n" +
			"# which listens on 127.0.0.1 (there are no namespaces to enter).\n" +
			"exec \"$@\"\n"
	}
	if withNode {
		scripts["node-ssh"] = "# node-ssh [SSH OPTIONS] " + realNodeName + " [COMMAND]: ssh to the demo's real node, checking\n" +
			"# its host key against the one its agent published (the ssh_config and\n" +
			"# known_hosts of `kubectl nodeaccess ssh-config` and `known-hosts`).\n" +
			"exec " + shq(demoExec) + " " + shq(lookPath("ssh", "/usr/bin/ssh")) + " -F " + shq(filepath.Join(c.sshDir(), "config")) + " \"$@\"\n"
	}
	for name, body := range scripts {
		script := "#!/bin/sh\n" + body
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			return fmt.Errorf("writing the wrapper %s: %w", name, err)
		}
	}
	return nil
}

// lookPath is where a program is, or def.
func lookPath(name, def string) string {
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return def
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shq quotes s for a POSIX shell.
func shq(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// display is how the commands the demo shows name a path: relative to the
// repository when inside it (they run there), absolute otherwise; quoted.
func display(c config, p string) string {
	if rel, err := filepath.Rel(c.root, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return shq(rel)
	}
	return shq(p)
}
