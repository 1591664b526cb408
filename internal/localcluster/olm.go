package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OLM's namespaces as its upstream install makes them: its own operators
// and catalogs in OLMNamespace, and a global OperatorGroup (every
// namespace) in OperatorsNamespace, where OperatorHub installs
// AllNamespaces operators.
const (
	OLMNamespace       = "olm"
	OperatorsNamespace = "operators"
	// GlobalOperatorGroup is the OperatorGroup of OperatorsNamespace.
	GlobalOperatorGroup = "global-operators"
)

// OLMOptions say where OLM's programs and CRDs are.
type OLMOptions struct {
	// BinDir holds olm and catalog (and opm, for ServeCatalog).
	BinDir string
	// CRDDir holds OLM's CRDs, as github.com/operator-framework/api ships
	// them in crds/.
	CRDDir string
	// LogDir receives olm.log and catalog.log.
	LogDir string
	// OperatorsNamespaceLabels are set on OperatorsNamespace when it is made
	// (Pod Security Admission labels, say).
	OperatorsNamespaceLabels map[string]string
}

// OLM is OLM's olm and catalog operators running as processes against the
// cluster. They bind :8080 and :8443 on every interface, so run them only
// inside private namespaces (RunInPrivateNamespaces).
type OLM struct {
	cluster *Cluster
	opts    OLMOptions
	procs   []*Process
}

// StartOLM installs OLM's CRDs (server-side: some are large), waits until
// they are served, makes OLMNamespace and OperatorsNamespace with its global
// OperatorGroup, and starts the olm and catalog operators. c must reach the
// cluster as an administrator; it needs no scheme for OLM's kinds.
func (c *Cluster) StartOLM(ctx context.Context, k8s client.Client, opts OLMOptions) (_ *OLM, err error) {
	if !InPrivateNamespaces() {
		return nil, errors.New("OLM's operators listen on every interface: start them only inside private namespaces (RunInPrivateNamespaces)")
	}
	for _, b := range []string{"olm", "catalog"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s is not built (make k8s-bin): %w", b, err)
		}
	}
	if err := os.MkdirAll(opts.LogDir, 0o700); err != nil {
		return nil, err
	}
	o := &OLM{cluster: c, opts: opts}
	defer func() {
		if err != nil {
			o.Stop()
		}
	}()
	files, err := filepath.Glob(filepath.Join(opts.CRDDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("finding OLM's CRDs in %s: none (%v)", opts.CRDDir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := ApplyYAML(ctx, k8s, data, nil); err != nil {
			return nil, fmt.Errorf("installing OLM's CRDs from %s: %w", filepath.Base(f), err)
		}
	}
	if err := waitFor(ctx, 30*time.Second, "OLM's CRDs served", func() error {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: "operators.coreos.com", Version: "v1alpha1", Kind: "ClusterServiceVersionList"})
		return k8s.List(ctx, list)
	}); err != nil {
		return nil, err
	}
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{OLMNamespace, nil}, {OperatorsNamespace, opts.OperatorsNamespaceLabels}} {
		obj := &unstructured.Unstructured{}
		obj.SetAPIVersion("v1")
		obj.SetKind("Namespace")
		obj.SetName(ns.name)
		obj.SetLabels(ns.labels)
		if err := k8s.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("creating namespace %s: %w", ns.name, err)
		}
	}
	group := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{}}}
	group.SetAPIVersion("operators.coreos.com/v1")
	group.SetKind("OperatorGroup")
	group.SetNamespace(OperatorsNamespace)
	group.SetName(GlobalOperatorGroup)
	if err := k8s.Create(ctx, group); err != nil {
		return nil, fmt.Errorf("creating the global OperatorGroup: %w", err)
	}
	// The image flags name images OLM would run for catalogs and bundles
	// served from images; with bundles inline (opm serve) it runs none.
	for _, p := range [][]string{
		{"olm", filepath.Join(opts.BinDir, "olm"), "--namespace=" + OLMNamespace, "--writeStatusName=", "--writePackageServerStatusName="},
		{"catalog", filepath.Join(opts.BinDir, "catalog"), "--kubeconfig=" + c.Kubeconfig, "--namespace=" + OLMNamespace,
			"--configmapServerImage=unused.invalid/configmap-server", "--opmImage=unused.invalid/opm", "--util-image=unused.invalid/util",
			"--writeStatusName="},
	} {
		proc, err := c.StartProcessEnv(opts.LogDir, p[0], nil, p[1:]...)
		if err != nil {
			return nil, err
		}
		o.procs = append(o.procs, proc)
	}
	return o, nil
}

// Healthy returns an error naming an OLM operator that has exited.
func (o *OLM) Healthy() error {
	for _, p := range o.procs {
		if p.Exited() {
			return fmt.Errorf("OLM's %s exited (see %s)", p.Name, filepath.Join(o.opts.LogDir, p.Name+".log"))
		}
	}
	return nil
}

// Stop stops the olm and catalog operators.
func (o *OLM) Stop() {
	if o == nil {
		return
	}
	for _, p := range o.procs {
		p.Stop(syscall.SIGTERM)
	}
	o.procs = nil
}

// CatalogServer is `opm serve` serving a file-based catalog over gRPC on
// loopback, for a CatalogSource of sourceType grpc that names its Address.
type CatalogServer struct {
	// Address is host:port, for CatalogSource spec.address.
	Address string
	proc    *Process
	tmp     string
}

// ServeCatalog runs `opm serve dir` on a free loopback port (opm binds
// every interface: private namespaces only) and waits until it accepts
// connections. Every bundle of the catalog must carry its manifests inline
// (`opm render` of a bundle directory does), so OLM unpacks nothing. OLM
// reads a catalog again only when it reconnects: to publish a new version,
// serve the new catalog and point the CatalogSource at it.
func (o *OLM) ServeCatalog(ctx context.Context, dir string) (_ *CatalogServer, err error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "opm")
	if err != nil {
		return nil, err
	}
	s := &CatalogServer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), tmp: tmp}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	name := "opm-" + strconv.Itoa(port)
	// --pprof-addr= turns its profiler off; -t moves its termination log
	// from /dev/termination-log; TMPDIR is its cache's own.
	if s.proc, err = o.cluster.StartProcessEnv(o.opts.LogDir, name, []string{"TMPDIR=" + tmp},
		filepath.Join(o.opts.BinDir, "opm"), "serve", dir, "-p", strconv.Itoa(port), "--pprof-addr=", "-t", filepath.Join(tmp, "termination.log")); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 60*time.Second, "opm serving "+dir, func() error {
		if s.proc.Exited() {
			return fmt.Errorf("opm exited (see %s)", filepath.Join(o.opts.LogDir, name+".log"))
		}
		conn, err := net.DialTimeout("tcp", s.Address, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop stops opm and removes its temporary directory.
func (s *CatalogServer) Stop() {
	if s == nil {
		return
	}
	s.proc.Stop(syscall.SIGTERM)
	_ = os.RemoveAll(s.tmp)
}
