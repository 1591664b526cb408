package controllers

import (
	"context"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// ledger holds the bounds: what the cluster holds over all rendered grants,
// and what each node's agent receives and writes. It starts from the
// rendered grants in the cache (what the agents hold), and is kept as
// grants are rendered and revoked. The nodes are those of the cache at each
// check: a node that joins or is relabelled later is not checked until the
// next change of a grant (its agent still refuses to write a file past its
// size limit).
type ledger struct {
	limits    render.ClusterLimits
	client    client.Client
	namespace string
	filter    *nodeFilter

	mu sync.Mutex
	l  *render.Ledger
}

// admit checks a rendering against the cluster limits. One that would take
// the cluster over them is narrowed to what the last accepted version and
// it both grant, which never adds to what the agents hold, and the limit's
// error is returned as overLimit. Admissions of different grants are
// serialised, so two workers cannot both take the last room.
func (l *ledger) admit(ctx context.Context, name string, res *render.Result, last *nav1.RenderedNodeAccessSpec) (overLimit, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.l == nil {
		seeded := render.NewLedger(l.limits)
		var list nav1.RenderedNodeAccessList
		if err := l.client.List(ctx, &list, client.InNamespace(l.namespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing rendered grants: %w", err)
		}
		for i := range list.Items {
			seeded.Set(list.Items[i].Name, render.FootprintOf(&list.Items[i].Spec))
		}
		l.l = seeded
	}
	fp := render.FootprintOf(&res.Spec)
	if !res.Narrowed {
		if overLimit = l.l.Check(name, fp); overLimit == nil {
			if overLimit, err = l.checkNodes(ctx, name, fp); err != nil {
				return nil, err
			}
		}
		if overLimit != nil {
			res.NarrowTo(last)
			fp = render.FootprintOf(&res.Spec)
		}
	}
	if res.Narrowed && last == nil {
		l.l.Remove(name) // nothing is written
	} else {
		l.l.Set(name, fp)
	}
	return overLimit, nil
}

// forget drops a revoked grant.
func (l *ledger) forget(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.l != nil {
		l.l.Remove(name)
	}
}

// checkNodes checks fp against the limits of every node in the cache, under
// the filter vocabulary the agents may use.
func (l *ledger) checkNodes(ctx context.Context, name string, fp render.Footprint) (error, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(nodeListGVK)
	if err := l.client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	labelSets := make([]map[string]string, len(nodes.Items))
	for i := range nodes.Items {
		labelSets[i] = nodes.Items[i].Labels
	}
	keys, err := l.filter.keys(ctx)
	if err != nil {
		return nil, err
	}
	return l.l.CheckNodes(name, fp, labelSets, keys), nil
}
