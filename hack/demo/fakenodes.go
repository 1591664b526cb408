package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// node is a simulated node: its labels and its accounts' hand-written keys.
type node struct {
	name   string
	labels map[string]string
	// handWritten maps an account to the authorized_keys it already has.
	handWritten map[string]string
}

// deploysOwnKey is a line deploy wrote by hand on payments-1 and on the
// real node: the agent must keep it.
const deploysOwnKey = "# deploy's own key, written by hand\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw5e0bmPa9oWfVhuMo4N2m0bYkGv2kAxc0Fq1yO0dNL ops-break-glass\n"

// fakeNodes are kwok's nodes; an agent process per node writes a directory
// of its own as that node's root.
var fakeNodes = []node{
	{"payments-1", map[string]string{"node.example.com/pool": "payments", "node-role.kubernetes.io/worker": ""},
		map[string]string{"deploy": deploysOwnKey}},
	{"payments-2", map[string]string{"node.example.com/pool": "payments", "node-role.kubernetes.io/worker": ""}, nil},
	{"gpu-1", map[string]string{"node.example.com/pool": "gpu", "node-role.kubernetes.io/worker": ""},
		map[string]string{"analyst": "# analyst's laptop\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFp1b3ZpbmdSaWdodEFsb25nTm90aGluZ1RvU2VlSGVyZTEy laptop\n"}},
	{"batch-1", map[string]string{"node.example.com/pool": "batch", "node-role.kubernetes.io/worker": ""}, nil},
}

// accounts exist on every node, the real one too, with these IDs.
var accounts = []string{"deploy", "analyst", "alice"}

// accountID is an account's uid and gid: 2001 and on as root; the current
// user's otherwise, so that the agent (running as that user) may write.
func accountID(i int) int {
	if os.Geteuid() != 0 {
		return os.Geteuid()
	}
	return 2001 + i
}

// makeHost writes a simulated node's etc/passwd, homes and hand-written keys.
func makeHost(hostRoot string, n node) error {
	var passwd strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/bin/bash\n")
	for i, acct := range accounts {
		id := accountID(i)
		fmt.Fprintf(&passwd, "%s:x:%d:%d::/home/%s:/bin/bash\n", acct, id, id, acct)
		home := filepath.Join(hostRoot, "home", acct)
		if err := os.MkdirAll(home, 0o755); err != nil {
			return err
		}
		if keys, ok := n.handWritten[acct]; ok {
			if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte(keys), 0o600); err != nil {
				return err
			}
		}
		if err := filepath.Walk(home, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, id, id)
		}); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(hostRoot, "etc"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(hostRoot, "etc", "passwd"), []byte(passwd.String()), 0o644)
}

// startFakeAgents makes every fake node's directory and starts its agent
// process. It returns the agents it started, also on error.
func startFakeAgents(c config, cluster *localcluster.Cluster) ([]*localcluster.Process, error) {
	var procs []*localcluster.Process
	for _, n := range fakeNodes {
		hostRoot := c.path("nodes", n.name)
		if err := makeHost(hostRoot, n); err != nil {
			return procs, fmt.Errorf("making node %s: %w", n.name, err)
		}
		a, err := cluster.StartProcess(c.logs(), "agent-"+n.name, filepath.Join(c.bin, "agent"), "--node-name="+n.name,
			"--namespace="+namespace, "--host-root="+hostRoot, "--kubeconfig="+cluster.Kubeconfig)
		if err != nil {
			return procs, err
		}
		procs = append(procs, a)
	}
	return procs, nil
}
