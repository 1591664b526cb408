// Command agent is the nodeaccess-operator node agent: it keeps the node's
// authorized_keys files in line with the NodeAccess objects that select the
// node. It runs in the operator's DaemonSet, or as a plain process against any
// kubeconfig with --host-root pointing at a directory that stands for a node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: agent [flags]\n\n"+
			"Keeps this node's authorized_keys files in line with the NodeAccess objects\n"+
			"that select it, and reports the result in the node's NodeAccessReport.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var (
		cfg        agent.Config
		kubeconfig string
		probeAddr  string
		homeRoots  string
		sshdHost   string
		sshdPort   int
		sshdLogs   string
	)
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "Name of the node the agent keeps (default: $NODE_NAME).")
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the rendered NodeAccess objects: the operator's (default: $POD_NAMESPACE).")
	fs.StringVar(&cfg.HostRoot, "host-root", "/host", "Directory where the host's /etc/passwd and homes are mounted.")
	fs.StringVar(&homeRoots, "home-roots", "/home", "Comma-separated host directories under which homes are written, each mounted under --host-root; a home elsewhere is reported HomeNotMounted.")
	fs.BoolVar(&cfg.AllowRoot, "allow-root-user", false, "Write keys for accounts with uid 0 (root, and other names for it) and in /root; without it their keys are only removed.")
	fs.DurationVar(&cfg.Resync, "resync", time.Minute, "Longest time between two full applies, even when nothing is seen to change.")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 10*time.Minute, "Longest time between two writes of the node's report.")
	fs.DurationVar(&cfg.ReportDelay, "report-delay", agent.DefaultReportDelay, "How long after a change the node's report is written, plus up to as much again at random, or up to the manager's published report interval when that is longer than --report-interval (files are always written at once).")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", agent.DefaultReportInterval, "Shortest time between two writes of a changed report: changes within it make one write at its end (files are always written at once).")
	fs.StringVar(&sshdHost, "sshd-host", os.Getenv("HOST_IP"), "Host of the node's sshd, whose version and host keys the agent reports (default: $HOST_IP, the node's IP; empty: not probed).")
	fs.IntVar(&sshdPort, "sshd-port", 22, "Port of the node's sshd (0: not probed).")
	fs.StringVar(&sshdLogs, "sshd-logs", "", "Comma-separated host paths of the syslog files where the node's sshd logs (for example /var/log/auth.log,/var/log/secure), each under --host-root: the agent reports the key logins it reads there (empty: logins are not tracked).")
	fs.BoolVar(&cfg.EndSessions, "end-sessions-on-revoke", false, "End the sshd sessions that logged in with a key when no grant gives that key to the account any more (needs --sshd-logs, and the host's PID namespace).")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig (default: in-cluster configuration).")
	fs.StringVar(&probeAddr, "health-probe-bind-address", "0", "Address of the liveness and readiness probes (0 disables them).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case cfg.NodeName == "":
		return errors.New("--node-name (or $NODE_NAME) is required")
	case cfg.Namespace == "":
		return errors.New("--namespace (or $POD_NAMESPACE) is required")
	case cfg.Resync <= 0 || cfg.Heartbeat <= 0:
		return errors.New("--resync and --heartbeat must be positive")
	case cfg.ReportDelay < 0 || cfg.ReportDelay >= cfg.Heartbeat:
		return errors.New("--report-delay must be zero or positive, and shorter than --heartbeat")
	case cfg.ReportInterval < 0 || cfg.ReportInterval >= cfg.Heartbeat:
		return errors.New("--report-interval must be zero or positive, and shorter than --heartbeat")
	}
	for _, r := range strings.Split(homeRoots, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.HomeRoots = append(cfg.HomeRoots, r)
		}
	}
	for _, p := range strings.Split(sshdLogs, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.SSHDLogs = append(cfg.SSHDLogs, p)
		}
	}
	if cfg.EndSessions && len(cfg.SSHDLogs) == 0 {
		return errors.New("--end-sessions-on-revoke needs --sshd-logs")
	}
	var err error
	if cfg.SSHDAddress, err = agent.SSHDAddress(sshdHost, sshdPort); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts)).WithValues("node", cfg.NodeName)
	klog.SetLogger(log)

	restCfg, err := loadConfig(kubeconfig)
	if err != nil {
		return err
	}
	runner, err := agent.NewRunner(restCfg, cfg, agent.ServeOptions{ProbeAddr: probeAddr})
	if err != nil {
		return err
	}
	log.Info("Starting agent", "namespace", cfg.Namespace, "hostRoot", cfg.HostRoot, "sshd", cfg.SSHDAddress,
		"sshdLogs", cfg.SSHDLogs, "endSessionsOnRevoke", cfg.EndSessions)
	// On SIGTERM the agent stops and leaves every file as it is: an agent
	// restart or upgrade never revokes access.
	ctx, stop := signal.NotifyContext(logr.NewContext(context.Background(), log), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runner.Start(ctx); err != nil {
		if errors.Is(err, agent.ErrPasswdReplaced) {
			// A clean stop: the container's restart mounts the new file.
			log.Info("Restarting to read the node's new /etc/passwd")
			return nil
		}
		return fmt.Errorf("running agent: %w", err)
	}
	return nil
}

func loadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("loading in-cluster configuration: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
