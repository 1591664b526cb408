// Package agentdaemonset renders the agent DaemonSet the manager owns: a pure
// function of a few options, so that its security-relevant shape (host paths,
// capabilities, read-only root) is table-tested rather than found in YAML.
package agentdaemonset

import (
	"fmt"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// MemoryLimit is the agent container's memory limit, and GoMemLimit the
// soft limit its Go runtime keeps the heap under. docs/benchmarks.md
// measures an agent at the manager's per-node bounds against them.
//
// GoGC is the agent's garbage-collection target: the heap may grow by half
// its live size between collections, not by all of it. An agent's live
// heap is a few MiB, so the runtime's minimum goal (4 MiB at the default
// of 100, 2 MiB at 50) is what it fills under churn; the memory is every
// node's, and the extra collections of so small a heap cost the agent a
// fraction of its CPU limit (docs/benchmarks.md).
const (
	MemoryLimit = "96Mi"
	GoMemLimit  = "72MiB"
	GoGC        = "50"
)

// RuntimeEnv is the Go runtime's part of the agent container's environment.
func RuntimeEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		// The Go runtime collects harder as the heap nears this, below the container's limit.
		{Name: "GOMEMLIMIT", Value: GoMemLimit},
		{Name: "GOGC", Value: GoGC},
	}
}

// Names and paths of the agent pod.
const (
	// Name is the DaemonSet's name.
	Name = "nodeaccess-agent"
	// ServiceAccountName is the agents' ServiceAccount.
	ServiceAccountName = "nodeaccess-agent"
	// HostRoot is where the host paths are mounted in the agent container.
	HostRoot = "/host"
	// ContainerName is the agent container's name.
	ContainerName = "agent"
)

// Options are what the manager decides about the DaemonSet.
type Options struct {
	// Namespace is the operator's namespace.
	Namespace string
	// Image is the agent image (RELATED_IMAGE_AGENT, or the manager's own).
	Image string
	// MaxUnavailable bounds how many agents a rolling update stops at once.
	MaxUnavailable intstr.IntOrString
	// SSHDPort is the port of each node's sshd, which its agent probes on
	// the node's IP for the host keys it reports; 0 disables the probe.
	SSHDPort int32
	// HomeRoots are the host directories under which accounts' homes are
	// written, each a read-write host path; empty means /home.
	HomeRoots []string
	// AllowRoot lets the agents write keys for uid 0 and mounts /root.
	AllowRoot bool
	// TrackLogins makes the agents follow the node's sshd logs and report
	// key logins: the directories of SSHDLogs are mounted read-only.
	TrackLogins bool
	// SSHDLogs are the host paths of the syslog files where sshd logs;
	// empty means DefaultSSHDLogs.
	SSHDLogs []string
	// EndSessions makes the agents end the sshd sessions whose key was
	// revoked (it implies TrackLogins): the pod shares the host's PID
	// namespace, to verify and signal sshd's session processes.
	EndSessions bool
	// RestartInPlace makes the agent's clean exit (the host replaced
	// /etc/passwd) restart the pod's containers in place, which the
	// kubelet's crash-loop back-off does not delay. The scheduler then
	// places agent pods only on nodes whose kubelet declares the feature
	// (Kubernetes 1.36 and later): set it only when every node has one.
	RestartInPlace bool
}

// DefaultSSHDLogs are where sshd logs through syslog on Debian and Ubuntu
// (auth.log) and on Red Hat's family (secure).
var DefaultSSHDLogs = []string{"/var/log/auth.log", "/var/log/secure"}

// CheckSSHDLog refuses a log path whose directory the agents could not be
// given read-only without exposing more of the host than its logs: it
// must be a clean absolute path of a file under /var/log.
func CheckSSHDLog(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || !strings.HasPrefix(path.Dir(p)+"/", "/var/log/") {
		return fmt.Errorf("sshd log %q is not a clean absolute path of a file under /var/log", p)
	}
	return nil
}

// sshdLogs returns the log files when logins are tracked, nil otherwise.
func (o Options) sshdLogs() []string {
	if !o.TrackLogins && !o.EndSessions {
		return nil
	}
	if len(o.SSHDLogs) == 0 {
		return DefaultSSHDLogs
	}
	return o.SSHDLogs
}

// logDirs are the directories of the log files, each mounted read-only:
// a file's own mount would keep the file renamed away at its first
// rotation, and never see the new one.
func (o Options) logDirs() []string {
	var dirs []string
	for _, f := range o.sshdLogs() {
		if d := path.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// homeRoots returns the home roots, /home when none is set.
func (o Options) homeRoots() []string {
	if len(o.HomeRoots) == 0 {
		return []string{"/home"}
	}
	return o.HomeRoots
}

// mounted returns the host directories mounted read-write: the home roots,
// and /root last when root is allowed.
func (o Options) mounted() []string {
	roots := o.homeRoots()
	if o.AllowRoot {
		roots = append(append([]string(nil), roots...), "/root")
	}
	return roots
}

// Labels select the agent pods.
func Labels() map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "nodeaccess-operator",
		"app.kubernetes.io/component": "agent",
	}
}

// DaemonSet returns the whole desired DaemonSet.
func DaemonSet(o Options) *appsv1.DaemonSet {
	hostPath := func(name, path string, typ corev1.HostPathType) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr.To(typ)},
		}}
	}
	maxUnavailable := o.MaxUnavailable
	// The account database alone, read-only, as a single file: not /etc,
	// which holds /etc/shadow and the private host keys. A file mount keeps
	// the inode it was given; the agent exits when the host's file is
	// replaced (useradd renames a new one into place), and its restart
	// mounts the new one.
	mounts := []corev1.VolumeMount{{Name: "passwd", MountPath: HostRoot + "/etc/passwd", ReadOnly: true}}
	volumes := []corev1.Volume{hostPath("passwd", "/etc/passwd", corev1.HostPathFile)}
	for i, root := range o.mounted() {
		name := "home"
		if i > 0 {
			name = fmt.Sprintf("home-%d", i)
		}
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: HostRoot + root})
		volumes = append(volumes, hostPath(name, root, corev1.HostPathDirectory))
	}
	for i, dir := range o.logDirs() {
		name := fmt.Sprintf("sshd-logs-%d", i)
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: HostRoot + dir, ReadOnly: true})
		// DirectoryOrCreate would write to the host; a node without the
		// directory fails the pod, which names it.
		volumes = append(volumes, hostPath(name, dir, corev1.HostPathDirectory))
	}
	securityContext := &corev1.SecurityContext{
		// Root, to write files owned by each user, but with only
		// the capabilities that takes: no privileged, no escalation.
		RunAsUser:                ptr.To[int64](0),
		RunAsNonRoot:             ptr.To(false),
		Privileged:               ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER"},
		},
	}
	if o.EndSessions {
		// Signalling sshd's root-owned session monitor from root needs no
		// capability (kill(2) between processes of one uid), but the
		// container runtimes' default AppArmor profile refuses signals to
		// processes outside the container; on nodes without AppArmor this
		// changes nothing.
		securityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	}
	ds := &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: o.Namespace, Labels: Labels()},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: Labels()},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      Labels(),
					Annotations: map[string]string{"kubectl.kubernetes.io/default-container": ContainerName},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:           ServiceAccountName,
					AutomountServiceAccountToken: ptr.To(true),
					PriorityClassName:            "system-node-critical",
					// The node's processes, to verify and end sshd sessions: only
					// when sessions are ended on revoke.
					HostPID:                       o.EndSessions,
					TerminationGracePeriodSeconds: ptr.To[int64](10),
					NodeSelector:                  map[string]string{corev1.LabelOSStable: "linux"},
					// Reach every node, tainted or not: access to a sick node matters most.
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					SecurityContext: &corev1.PodSecurityContext{
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:    ContainerName,
						Image:   o.Image,
						Command: []string{"/agent"},
						Args:    args(o),
						Env: append([]corev1.EnvVar{
							{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
							{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
						}, RuntimeEnv()...),
						SecurityContext: securityContext,
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("24Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse(MemoryLimit)},
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8081)}},
							PeriodSeconds:    20,
							FailureThreshold: 3,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8081)}},
							PeriodSeconds: 10,
						},
						VolumeMounts: mounts,
					}},
					Volumes: volumes,
				},
			},
		},
	}
	if o.RestartInPlace {
		// The agent exits 0 only to be started again: when the host
		// replaced /etc/passwd (a single-file mount keeps the old inode),
		// or when the kubelet stopped it. A plain restart of an exited
		// container waits out the kubelet's crash-loop back-off, whatever
		// the exit code: none for the first exit, then 10 s for an exit
		// within 10 minutes of the last restart, doubling up to 5 minutes;
		// so a second account added soon after a first would wait.
		// Restarting the pod's containers in place removes the exited
		// container and starts a fresh one, with the new file, at once.
		// Other exit codes are crashes and keep the back-off.
		c := &ds.Spec.Template.Spec.Containers[0]
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		c.RestartPolicyRules = []corev1.ContainerRestartRule{{
			Action: corev1.ContainerRestartRuleActionRestartAllContainers,
			ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{
				Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{0},
			},
		}}
	}
	return ds
}

// args are the agent's command-line flags.
func args(o Options) []string {
	a := []string{
		"--host-root=" + HostRoot,
		"--health-probe-bind-address=:8081",
		// The node's sshd is reached on the node's IP,
		// from the pod's network: no host path, no host network.
		fmt.Sprintf("--sshd-port=%d", o.SSHDPort),
		"--home-roots=" + strings.Join(o.homeRoots(), ","),
	}
	if o.AllowRoot {
		a = append(a, "--allow-root-user")
	}
	if logs := o.sshdLogs(); len(logs) > 0 {
		a = append(a, "--sshd-logs="+strings.Join(logs, ","))
	}
	if o.EndSessions {
		a = append(a, "--end-sessions-on-revoke")
	}
	return a
}
