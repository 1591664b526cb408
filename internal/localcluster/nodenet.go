package localcluster

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
)

// The real node's addresses. 198.18.0.0/15 is the range set aside for
// benchmarks (RFC 2544): it clashes with no private network, and it exists
// only inside the private network namespace anyway.
const (
	// DefaultNodeIP is the real node's InternalIP, where its kubelet
	// listens and, in a cluster with a real node, the API server too.
	DefaultNodeIP = "198.18.255.1"
	// PodCIDR holds the real node's pod addresses; PodGateway is the CNI
	// bridge's address in it.
	PodCIDR    = "198.18.0.0/24"
	PodGateway = "198.18.0.1"
	// nodeBridge carries the node IP (the kubelet refuses a loopback node
	// IP, and this kernel may lack dummy links); cniBridge links the pods.
	nodeBridge = "na-node0"
	cniBridge  = "na-cni0"
)

// NodeNetwork is the real node's network: its IP on a bridge of its own,
// in the private network namespace.
type NodeNetwork struct {
	IP string
}

// CreateNodeNetwork puts ip (DefaultNodeIP when empty) on a port-less
// bridge. Create it before the cluster, whose API server then binds that
// address (Options.Address). It refuses to run outside the private
// namespaces, where it would change the machine's network.
func CreateNodeNetwork(ip string) (*NodeNetwork, error) {
	if !InPrivateNamespaces() {
		return nil, fmt.Errorf("a node network is made only inside private namespaces (RunInPrivateNamespaces)")
	}
	if ip == "" {
		ip = DefaultNodeIP
	}
	if parsed := net.ParseIP(ip); parsed == nil || parsed.To4() == nil || parsed.IsLoopback() {
		return nil, fmt.Errorf("node IP %q is not a non-loopback IPv4 address", ip)
	}
	for _, args := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", ip + "/32", "dev", nodeBridge},
		{"link", "set", nodeBridge, "up"},
	} {
		if err := ipCommand(args...); err != nil {
			return nil, fmt.Errorf("making the node network: %w", err)
		}
	}
	return &NodeNetwork{IP: ip}, nil
}

// Delete removes the node's bridge.
func (n *NodeNetwork) Delete() error {
	if n == nil {
		return nil
	}
	return ipCommand("link", "del", nodeBridge)
}

// links lists the network links of this namespace.
func links() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network links: %w", err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names, nil
}

func ipCommand(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
