package plugin

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Two real ed25519 keys and their fingerprints.
const (
	keyA = "AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq"
	fpA  = "SHA256:uVvsqT1pvK+9aIt8Y2OfCrXcIcOYPfALnJkCBqrxXP4"
	keyB = "AAAAC3NzaC1lZDI1NTE5AAAAILx8BlVk0iQ8dc2TlIotZ8phKS+nHaE6FNvJayhFxslz"
	fpB  = "SHA256:pF8uwZFKh1jQyxlQHNwocoOIXBZiiSeN04YDk4YvLfo"
)

// Nothing in a report or a Node is taken on trust: stale reports, keys
// that do not match their fingerprint, addresses claimed by two nodes,
// and addresses that are neither IPs nor DNS names are left out.
func TestHostsFor(t *testing.T) {
	node := func(name, uid string, addrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid), Labels: map[string]string{"pool": "a"}}}
		for _, a := range addrs {
			typ, addr, _ := strings.Cut(a, "=")
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: addr})
		}
		return n
	}
	report := func(name, ownerUID, addr string, keys ...nav1.SSHHostKey) *nav1.NodeAccessReport {
		return &nav1.NodeAccessReport{
			ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID(ownerUID)}}},
			Status:     nav1.NodeAccessReportStatus{SSHD: &nav1.SSHDStatus{Address: addr, Version: "SSH-2.0-OpenSSH_9.2p1", HostKeys: keys}},
		}
	}
	ka := nav1.SSHHostKey{Type: "ssh-ed25519", Key: keyA, Fingerprint: fpA}
	kb := nav1.SSHHostKey{Type: "ssh-ed25519", Key: keyB, Fingerprint: fpB}
	all := map[string]*corev1.Node{
		"good":    node("good", "u1", "InternalIP=10.0.0.1", "Hostname=good", "ExternalIP=203.0.113.1"),
		"port":    node("port", "u2", "InternalIP=10.0.0.2"),
		"stale":   node("stale", "u3-new", "InternalIP=10.0.0.3"),
		"liar":    node("liar", "u4", "InternalIP=10.0.0.4", "ExternalIP=203.0.113.1", "Hostname=evil host,x"),
		"badkey":  node("badkey", "u5", "InternalIP=10.0.0.5"),
		"nokeys":  node("nokeys", "u6", "InternalIP=10.0.0.6"),
		"failing": node("failing", "u7", "InternalIP=10.0.0.7"),
		"absent":  node("absent", "u8", "InternalIP=10.0.0.8"),
	}
	failing := report("failing", "u7", "10.0.0.7:22")
	failing.Status.SSHD.Reason, failing.Status.SSHD.Message = nav1.SSHDUnreachableReason, "connection refused"
	reps := map[string]*nav1.NodeAccessReport{
		"good":    report("good", "u1", "10.0.0.1:22", ka),
		"port":    report("port", "u2", "10.0.0.2:2222", kb),
		"stale":   report("stale", "u3-old", "10.0.0.3:22", ka),
		"liar":    report("liar", "u4", "10.0.0.4:22", kb),
		"badkey":  report("badkey", "u5", "10.0.0.5:22", nav1.SSHHostKey{Type: "ssh-ed25519", Key: keyA, Fingerprint: fpB}),
		"nokeys":  {ObjectMeta: metav1.ObjectMeta{Name: "nokeys", OwnerReferences: []metav1.OwnerReference{{Kind: "Node", Name: "nokeys", UID: "u6"}}}},
		"failing": failing,
	}
	hosts, warnings, err := hostsFor(&metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}, all, reps)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Node)
	}
	if strings.Join(names, ",") != "good,liar,port" {
		t.Fatalf("hosts %v, want good, liar, port", names)
	}
	warned := strings.Join(warnings, "\n")
	for _, want := range []string{
		"node absent: no NodeAccessReport",
		"node stale: its NodeAccessReport belongs to an earlier Node",
		"node badkey: host key ssh-ed25519 left out: its fingerprint is " + fpA,
		"node nokeys: its agent does not publish host keys",
		"node failing: no host key known: SSHDUnreachable: connection refused",
		"node good: address 203.0.113.1 is claimed by several nodes",
		"node liar: address 203.0.113.1 is claimed by several nodes",
	} {
		if !strings.Contains(warned, want) {
			t.Errorf("no warning %q in:\n%s", want, warned)
		}
	}

	got := KnownHosts(hosts)
	want := "# good: sshd at 10.0.0.1:22, SSH-2.0-OpenSSH_9.2p1\n" +
		"good,10.0.0.1 ssh-ed25519 " + keyA + "\n" +
		"# liar: sshd at 10.0.0.4:22, SSH-2.0-OpenSSH_9.2p1\n" +
		"liar,10.0.0.4 ssh-ed25519 " + keyB + "\n" +
		"# port: sshd at 10.0.0.2:2222, SSH-2.0-OpenSSH_9.2p1\n" +
		"port,[10.0.0.2]:2222 ssh-ed25519 " + keyB + "\n"
	if got != want {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", got, want)
	}

	cfg, err := SSHConfig(hosts[2:], "ops", "/home/me/my known_hosts")
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := "Host port\n    HostName 10.0.0.2\n    Port 2222\n    User ops\n    HostKeyAlias port\n" +
		"    UserKnownHostsFile \"/home/me/my known_hosts\"\n    StrictHostKeyChecking yes\n\n"
	if cfg != wantCfg {
		t.Errorf("ssh_config:\n%s\nwant:\n%s", cfg, wantCfg)
	}
	if _, err := SSHConfig(hosts, "", "x\"\nProxyCommand evil"); err == nil {
		t.Error("a known_hosts path that breaks out of its line was accepted")
	}
}
