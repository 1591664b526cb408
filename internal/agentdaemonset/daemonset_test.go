package agentdaemonset

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestDaemonSetIsLeastPrivilege(t *testing.T) {
	ds := DaemonSet(Options{Namespace: "nodeaccess-system", Image: "example.com/agent:1", MaxUnavailable: intstr.FromString("10%"), SSHDPort: 2222})
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("want exactly one container, got %d (+%d init)", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatalf("agent must not be privileged nor escalate: %+v", sc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Fatal("agent root file system must be read-only")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER"}) {
		t.Fatalf("capabilities are %+v; want ALL dropped and only CHOWN, DAC_OVERRIDE, FOWNER added", sc.Capabilities)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Fatal("agent must not share host namespaces")
	}

	// Host paths: /home read-write and /etc/passwd read-only, nothing else.
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			t.Fatalf("unexpected non-host-path volume %q", v.Name)
		}
		hostPaths[v.Name] = v.HostPath.Path
	}
	want := map[string]string{"home": "/home", "passwd": "/etc/passwd"}
	if len(hostPaths) != len(want) {
		t.Fatalf("host paths %v, want %v", hostPaths, want)
	}
	for name, path := range want {
		if hostPaths[name] != path {
			t.Fatalf("host paths %v, want %v", hostPaths, want)
		}
	}
	for _, m := range c.VolumeMounts {
		if wantRO := m.Name == "passwd"; m.ReadOnly != wantRO {
			t.Errorf("mount %s read-only=%v, want %v", m.Name, m.ReadOnly, wantRO)
		}
	}

	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["NODE_NAME"] != "spec.nodeName" {
		t.Errorf("NODE_NAME must come from the downward API spec.nodeName, got %q", env["NODE_NAME"])
	}
	// The node's sshd is probed on the node's own IP and the configured port.
	if env["HOST_IP"] != "status.hostIP" {
		t.Errorf("HOST_IP must come from the downward API status.hostIP, got %q", env["HOST_IP"])
	}
	if !slices.Contains(c.Args, "--sshd-port=2222") {
		t.Errorf("args %v do not pass the sshd port", c.Args)
	}
	if c.Image != "example.com/agent:1" || ds.Namespace != "nodeaccess-system" {
		t.Errorf("image %q namespace %q not taken from options", c.Image, ds.Namespace)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priority class %q", pod.PriorityClassName)
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "" {
		t.Errorf("agent must tolerate every taint: %+v", pod.Tolerations)
	}
	if got := ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String(); got != "10%" {
		t.Errorf("maxUnavailable %s, want 10%%", got)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Error("agent needs resource requests and limits")
	}
}

// Homes outside /home are written only under the home roots configured, each
// a host path of its own; root's home only when root is allowed.
func TestHomeRootsAndRoot(t *testing.T) {
	mountsOf := func(o Options) (map[string]string, []string) {
		ds := DaemonSet(o)
		c := ds.Spec.Template.Spec.Containers[0]
		got := map[string]string{}
		vols := map[string]string{}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			vols[v.Name] = v.HostPath.Path
		}
		for _, m := range c.VolumeMounts {
			got[m.MountPath] = vols[m.Name]
		}
		return got, c.Args
	}
	got, args := mountsOf(Options{HomeRoots: []string{"/home", "/var/home", "/srv"}})
	for _, root := range []string{"/home", "/var/home", "/srv"} {
		if got[HostRoot+root] != root {
			t.Errorf("home root %s mounted from %q", root, got[HostRoot+root])
		}
	}
	if _, ok := got[HostRoot+"/root"]; ok || slices.Contains(args, "--allow-root-user") {
		t.Error("/root mounted, or root allowed, without AllowRoot")
	}
	if !slices.Contains(args, "--home-roots=/home,/var/home,/srv") {
		t.Errorf("args %v", args)
	}
	got, args = mountsOf(Options{AllowRoot: true})
	if got[HostRoot+"/root"] != "/root" || !slices.Contains(args, "--allow-root-user") || !slices.Contains(args, "--home-roots=/home") {
		t.Errorf("with root allowed: mounts %v, args %v", got, args)
	}
}

// Login tracking adds the log directories, read-only, and the flags;
// ending sessions adds the host's PID namespace (and leaves the runtime's
// AppArmor profile, which refuses signals out of the container). Nothing
// of it without the options, and never a capability more.
func TestLoginTrackingAndEndingSessions(t *testing.T) {
	cases := []struct {
		name     string
		opts     Options
		logDirs  []string
		logsArg  string
		hostPID  bool
		unconfin bool
	}{
		{name: "off", opts: Options{}},
		{name: "tracking", opts: Options{TrackLogins: true}, logDirs: []string{"/var/log"},
			logsArg: "--sshd-logs=/var/log/auth.log,/var/log/secure"},
		{name: "tracking a dedicated directory", opts: Options{TrackLogins: true, SSHDLogs: []string{"/var/log/sshd/auth.log", "/var/log/sshd/old.log"}},
			logDirs: []string{"/var/log/sshd"}, logsArg: "--sshd-logs=/var/log/sshd/auth.log,/var/log/sshd/old.log"},
		{name: "ending sessions implies tracking", opts: Options{EndSessions: true}, logDirs: []string{"/var/log"},
			logsArg: "--sshd-logs=/var/log/auth.log,/var/log/secure", hostPID: true, unconfin: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds := DaemonSet(tc.opts)
			pod := ds.Spec.Template.Spec
			c := pod.Containers[0]
			if pod.HostPID != tc.hostPID || pod.HostNetwork || pod.HostIPC {
				t.Errorf("hostPID %v hostNetwork %v hostIPC %v, want hostPID %v only", pod.HostPID, pod.HostNetwork, pod.HostIPC, tc.hostPID)
			}
			if !slices.Equal(c.SecurityContext.Capabilities.Add, []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER"}) {
				t.Errorf("capabilities %v", c.SecurityContext.Capabilities.Add)
			}
			if got := c.SecurityContext.AppArmorProfile != nil && c.SecurityContext.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined; got != tc.unconfin {
				t.Errorf("AppArmor unconfined %v, want %v", got, tc.unconfin)
			}
			vols := map[string]string{}
			for _, v := range pod.Volumes {
				vols[v.Name] = v.HostPath.Path
			}
			var dirs []string
			for _, m := range c.VolumeMounts {
				if strings.HasPrefix(m.Name, "sshd-logs") {
					dirs = append(dirs, vols[m.Name])
					if !m.ReadOnly || m.MountPath != HostRoot+vols[m.Name] {
						t.Errorf("log mount %+v must be read-only at %s", m, HostRoot+vols[m.Name])
					}
				} else if m.Name != "passwd" && m.Name != "home" {
					t.Errorf("unexpected mount %+v", m)
				}
			}
			if !slices.Equal(dirs, tc.logDirs) {
				t.Errorf("log directories %v, want %v", dirs, tc.logDirs)
			}
			var logsArg string
			for _, a := range c.Args {
				if strings.HasPrefix(a, "--sshd-logs=") {
					logsArg = a
				}
			}
			if logsArg != tc.logsArg || slices.Contains(c.Args, "--end-sessions-on-revoke") != tc.hostPID {
				t.Errorf("args %v", c.Args)
			}
		})
	}
}

// With RestartInPlace, the agent's clean exit (its /etc/passwd was
// replaced) restarts the pod's containers in place, without the kubelet's
// crash-loop back-off; any other exit code is a crash and keeps the
// back-off. Without it the pod has no restart rule, which would keep
// agent pods off nodes whose kubelet does not declare the feature.
func TestCleanExitRestartsInPlaceOnlyWhenAsked(t *testing.T) {
	if c := DaemonSet(Options{}).Spec.Template.Spec.Containers[0]; c.RestartPolicy != nil || len(c.RestartPolicyRules) > 0 {
		t.Fatalf("restart policy %v, rules %+v without RestartInPlace", c.RestartPolicy, c.RestartPolicyRules)
	}
	c := DaemonSet(Options{RestartInPlace: true}).Spec.Template.Spec.Containers[0]
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("container restart policy %v, want Always", c.RestartPolicy)
	}
	if len(c.RestartPolicyRules) != 1 {
		t.Fatalf("restart rules %+v, want one", c.RestartPolicyRules)
	}
	r := c.RestartPolicyRules[0]
	if r.Action != corev1.ContainerRestartRuleActionRestartAllContainers || r.ExitCodes == nil ||
		r.ExitCodes.Operator != corev1.ContainerRestartRuleOnExitCodesOpIn || !slices.Equal(r.ExitCodes.Values, []int32{0}) {
		t.Errorf("restart rule %+v, want RestartAllContainers on exit code 0 only", r)
	}
}

// The agent's Go runtime is told its memory: a soft limit below the
// container's (collections get harder before the kernel kills it) and a
// garbage-collection target that keeps the small heap's growth between
// collections at half (docs/design.md, "What an agent holds").
func TestTheAgentsGoRuntimeKnowsItsMemory(t *testing.T) {
	ds := DaemonSet(Options{Namespace: "nodeaccess-system", Image: "example.com/agent:1", MaxUnavailable: intstr.FromString("10%")})
	c := ds.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["GOGC"] != "50" {
		t.Errorf("GOGC is %q, want 50", env["GOGC"])
	}
	soft, err := resource.ParseQuantity(strings.TrimSuffix(env["GOMEMLIMIT"], "B"))
	if err != nil {
		t.Fatalf("GOMEMLIMIT %q: %v", env["GOMEMLIMIT"], err)
	}
	limit := c.Resources.Limits[corev1.ResourceMemory]
	if limit.IsZero() || soft.Cmp(limit) >= 0 || soft.Value() < limit.Value()/2 {
		t.Errorf("GOMEMLIMIT %s against a memory limit of %s: want below it, and not below half", soft.String(), limit.String())
	}
}
