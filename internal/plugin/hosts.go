package plugin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// ReportPolicyName is the ValidatingAdmissionPolicy (and its binding) that
// lets an agent write only its own node's report; host keys from reports
// are only as trustworthy as this policy.
const ReportPolicyName = "nodeaccess-agent-own-report"

// Host is one node as known_hosts and ssh_config describe it: where its
// sshd is, and the host keys its agent published.
type Host struct {
	// Node is the node's name; ssh_config uses it as Host and HostKeyAlias.
	Node string
	// HostName and Port are where its sshd listens.
	HostName string
	Port     int
	// Addresses are the node's addresses that no other node claims.
	Addresses []string
	// Version is the sshd version the agent saw.
	Version string
	Keys    []nav1.SSHHostKey
}

// hostsFor returns the hosts, sorted by name, of the nodes sel selects that
// published at least one valid host key, and a warning for every node or
// key left out and why. Nothing is taken on trust: a report must belong to
// the Node object it names, every key must parse and match its
// fingerprint, and an address claimed by two nodes is used for neither.
func hostsFor(sel *metav1.LabelSelector, all map[string]*corev1.Node, reps map[string]*nav1.NodeAccessReport) ([]Host, []string, error) {
	selected, err := desiredstate.SelectedNodes(sel, labelsOf(all))
	if err != nil {
		return nil, nil, err
	}
	claims := addressClaims(all)
	var hosts []Host
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	for _, name := range selected {
		node := all[name]
		rep := reps[name]
		switch {
		case rep == nil:
			warn("node %s: no NodeAccessReport; its agent has not reported", name)
			continue
		case !ownedBy(rep, node):
			warn("node %s: its NodeAccessReport belongs to an earlier Node of that name; not trusted", name)
			continue
		case rep.Status.SSHD == nil:
			warn("node %s: its agent does not publish host keys (its --sshd-port is 0, or it runs without a node address)", name)
			continue
		case rep.Status.SSHD.Reason != "":
			warn("node %s: no host key known: %s: %s", name, rep.Status.SSHD.Reason, rep.Status.SSHD.Message)
			continue
		}
		sshd := rep.Status.SSHD
		h := Host{Node: name, Version: sshd.Version, Port: 22}
		probed, port, err := net.SplitHostPort(sshd.Address)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
			warn("node %s: its report names no valid sshd address (%q)", name, sshd.Address)
			continue
		} else {
			h.Port = p
		}
		for _, a := range nodeAddresses(node) {
			if claims[a] == 1 {
				h.Addresses = append(h.Addresses, a)
			} else {
				warn("node %s: address %s is claimed by several nodes; left out", name, a)
			}
		}
		switch {
		case slices.Contains(h.Addresses, probed):
			h.HostName = probed
		case len(h.Addresses) > 0:
			h.HostName = h.Addresses[0]
			warn("node %s: its sshd was probed at %s, which is not one of its addresses; using %s", name, probed, h.HostName)
		default:
			warn("node %s: no address of its own", name)
			continue
		}
		for _, k := range sshd.HostKeys {
			if err := checkHostKey(k); err != nil {
				warn("node %s: host key %s left out: %v", name, k.Type, err)
				continue
			}
			h.Keys = append(h.Keys, k)
		}
		if len(h.Keys) == 0 {
			warn("node %s: no valid host key", name)
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts, warnings, nil
}

// ownedBy reports whether rep was written for this very Node object (the
// agent makes the Node its owner; a recreated Node has a new UID).
func ownedBy(rep *nav1.NodeAccessReport, node *corev1.Node) bool {
	for _, ref := range rep.OwnerReferences {
		if ref.Kind == "Node" && ref.Name == node.Name && ref.UID == node.UID {
			return true
		}
	}
	return false
}

// nodeAddresses are a node's IP addresses and DNS names that are safe to
// write into known_hosts and ssh_config, InternalIP first.
func nodeAddresses(node *corev1.Node) []string {
	var out []string
	for _, typ := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeInternalDNS, corev1.NodeExternalDNS, corev1.NodeHostName} {
		for _, a := range node.Status.Addresses {
			if a.Type != typ || slices.Contains(out, a.Address) {
				continue
			}
			ip := net.ParseIP(a.Address)
			isIP := typ == corev1.NodeInternalIP || typ == corev1.NodeExternalIP
			if (isIP && ip != nil) || (!isIP && ip == nil && len(validation.IsDNS1123Subdomain(a.Address)) == 0) {
				out = append(out, a.Address)
			}
		}
	}
	return out
}

// addressClaims counts, for every name and address, how many nodes claim
// it (as their name or one of their addresses).
func addressClaims(all map[string]*corev1.Node) map[string]int {
	claims := map[string]int{}
	for name, n := range all {
		mine := map[string]bool{name: true}
		for _, a := range nodeAddresses(n) {
			mine[a] = true
		}
		for a := range mine {
			claims[a]++
		}
	}
	return claims
}

// checkHostKey parses a published key and checks its type and fingerprint.
func checkHostKey(k nav1.SSHHostKey) error {
	data, err := base64.StdEncoding.DecodeString(k.Key)
	if err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	pk, err := ssh.ParsePublicKey(data)
	if err != nil {
		return fmt.Errorf("not an SSH public key: %w", err)
	}
	if pk.Type() != k.Type {
		return fmt.Errorf("the key is of type %s", pk.Type())
	}
	if fp := ssh.FingerprintSHA256(pk); fp != k.Fingerprint {
		return fmt.Errorf("its fingerprint is %s, not %s", fp, k.Fingerprint)
	}
	return nil
}

// KnownHosts renders hosts as known_hosts lines: the node's name first
// (ssh_config's HostKeyAlias), then its addresses, as [address]:port when
// the port is not 22.
func KnownHosts(hosts []Host) string {
	var b strings.Builder
	for _, h := range hosts {
		patterns := []string{h.Node}
		for _, a := range h.Addresses {
			if a == h.Node {
				continue
			}
			if h.Port != 22 {
				a = "[" + a + "]:" + strconv.Itoa(h.Port)
			}
			patterns = append(patterns, a)
		}
		fmt.Fprintf(&b, "# %s: sshd at %s", h.Node, net.JoinHostPort(h.HostName, strconv.Itoa(h.Port)))
		if h.Version != "" {
			fmt.Fprintf(&b, ", %s", clean(h.Version))
		}
		b.WriteString("\n")
		for _, k := range h.Keys {
			fmt.Fprintf(&b, "%s %s %s\n", strings.Join(patterns, ","), k.Type, k.Key)
		}
	}
	return b.String()
}

// SSHConfig renders hosts as ssh_config Host stanzas that verify each
// node's host key, by its name, against knownHostsFile.
func SSHConfig(hosts []Host, user, knownHostsFile string) (string, error) {
	if strings.ContainsAny(knownHostsFile, "\"\n\r\t") || knownHostsFile == "" {
		return "", fmt.Errorf("the known_hosts path %q cannot be written into ssh_config", knownHostsFile)
	}
	if strings.Contains(knownHostsFile, " ") {
		knownHostsFile = `"` + knownHostsFile + `"`
	}
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "Host %s\n", h.Node)
		fmt.Fprintf(&b, "    HostName %s\n", h.HostName)
		fmt.Fprintf(&b, "    Port %d\n", h.Port)
		if user != "" {
			fmt.Fprintf(&b, "    User %s\n", user)
		}
		fmt.Fprintf(&b, "    HostKeyAlias %s\n", h.Node)
		fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", knownHostsFile)
		b.WriteString("    StrictHostKeyChecking yes\n\n")
	}
	return b.String(), nil
}

// checkReportPolicy warns when the policy that binds each agent to its own
// node's report is not in force: then any agent can publish host keys for
// any node.
func (o *Options) checkReportPolicy(ctx context.Context, c client.Client) {
	consequence := "any node's agent can publish host keys for any node, so these keys are only as trustworthy as every agent; " +
		"the operator's manager creates it: check that it runs, with its shipped permissions"
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	err := c.Get(ctx, client.ObjectKey{Name: ReportPolicyName}, policy)
	switch {
	case apierrors.IsNotFound(err):
		o.warnf("the ValidatingAdmissionPolicy %s is not installed: %s", ReportPolicyName, consequence)
		return
	case err != nil:
		o.warnf("cannot check that the ValidatingAdmissionPolicy %s is installed (%s): without it %s", ReportPolicyName, clean(err.Error()), consequence)
		return
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	err = c.Get(ctx, client.ObjectKey{Name: ReportPolicyName}, binding)
	switch {
	case apierrors.IsNotFound(err):
		o.warnf("the ValidatingAdmissionPolicyBinding %s is not installed: %s", ReportPolicyName, consequence)
	case err != nil:
		o.warnf("cannot check that the ValidatingAdmissionPolicyBinding %s is installed (%s): without it %s", ReportPolicyName, clean(err.Error()), consequence)
	case binding.Spec.PolicyName != ReportPolicyName || !slices.Contains(binding.Spec.ValidationActions, admissionregistrationv1.Deny):
		o.warnf("the ValidatingAdmissionPolicyBinding %s does not deny through %s: %s", ReportPolicyName, ReportPolicyName, consequence)
	}
}

// hostsFromCluster reads what hostsFor needs.
func (o *Options) hostsFromCluster(ctx context.Context, selector string) ([]Host, error) {
	c, err := o.client()
	if err != nil {
		return nil, err
	}
	sel, err := metav1.ParseToLabelSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("parsing --selector: %w", err)
	}
	o.checkReportPolicy(ctx, c)
	all, err := nodes(ctx, c)
	if err != nil {
		return nil, err
	}
	reps, err := reports(ctx, c)
	if err != nil {
		return nil, err
	}
	hosts, warnings, err := hostsFor(sel, all, reps)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		o.warnf("%s", clean(w))
	}
	if len(hosts) == 0 {
		return nil, errors.New("no host key is known for any selected node")
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Node < hosts[j].Node })
	return hosts, nil
}
