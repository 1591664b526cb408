package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// defaultAgentImage is the image the manager puts in the agent DaemonSet
// when no real node runs it (kwok's fake pods run nothing).
const defaultAgentImage = "quay.io/nodeaccess/nodeaccess-operator:0.2.0"

// up owns the cluster and the product's processes until SIGTERM or
// SIGINT. With a real node it first enters private namespaces and runs
// again inside them (realnode.go).
func up(c config) error {
	if c.realNode != "false" && !localcluster.InPrivateNamespaces() {
		return upInNamespaces(c)
	}
	if !localcluster.InPrivateNamespaces() {
		if err := writePidFile(c); err != nil {
			return err
		}
		defer os.Remove(c.pidFile())
	}
	return serve(c, localcluster.InPrivateNamespaces())
}

func writePidFile(c config) error {
	return os.WriteFile(c.pidFile(), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// serve starts the cluster, the operator's manifests, the manager, an
// agent per fake node and, withNode, the real node with its sshd; says
// it is ready; waits for a signal; and stops it all, the real node first
// (its pods are deleted through the API) and the cluster last.
func serve(c config, withNode bool) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	defer os.Remove(c.readyFile())

	address := "" // loopback
	if withNode {
		network, err := localcluster.CreateNodeNetwork("")
		if err != nil {
			return err
		}
		defer network.Delete()
		address = network.IP
	}
	var lnodes []localcluster.Node
	for _, n := range fakeNodes {
		lnodes = append(lnodes, localcluster.Node{Name: n.name, Labels: n.labels})
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Dir: c.path("cluster"), BinDir: c.k8sBin, KwokStages: c.path("kwok.yaml"), Nodes: lnodes, Address: address,
	})
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	defer cluster.Stop()
	k8s, err := newClient(cluster)
	if err != nil {
		return err
	}
	if err := localcluster.ApplyManifests(ctx, k8s, c.root); err != nil {
		return fmt.Errorf("applying the operator's manifests: %w", err)
	}

	agentImage := defaultAgentImage
	if withNode {
		// The DaemonSet's image is the archive the real node imports.
		if agentImage, err = imageRef(filepath.Join(c.images, operatorArchive)); err != nil {
			return err
		}
	}
	var procs []*localcluster.Process
	var node *realNode
	defer func() {
		for _, p := range procs {
			p.Stop(syscall.SIGTERM)
		}
		node.stop()
	}()
	mgr, err := cluster.StartProcess(c.logs(), "manager", filepath.Join(c.bin, "manager"), "--namespace="+namespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--operator-deployment=",
		"--agent-image="+agentImage)
	if err != nil {
		return err
	}
	procs = append(procs, mgr)
	agents, err := startFakeAgents(c, cluster)
	procs = append(procs, agents...)
	if err != nil {
		return err
	}

	var st state
	if withNode {
		if node, err = startRealNode(ctx, c, cluster); err != nil {
			if c.realNode == "true" {
				return err
			}
			fmt.Println("demo: no real node:", err)
			st.NoRealNode = err.Error()
		} else {
			st.RealNode = node.name()
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.readyFile(), data, 0o644); err != nil {
		return err
	}
	fmt.Println("demo: up; stop with `make demo-down`")
	<-ctx.Done()
	fmt.Println("demo: stopping")
	return nil
}

func newClient(cluster *localcluster.Cluster) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := nav1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cluster.Config, client.Options{Scheme: scheme})
}
