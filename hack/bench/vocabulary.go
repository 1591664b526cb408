package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// settleVocabulary brings the cluster to the steady state the scenarios
// measure: the watch filter's vocabulary already names the node label keys
// their selectors use, and every agent has switched to it. A NodeAccess that
// selects no node names the keys; the bench waits until the manager
// published them, then until the in-process agents have listed nothing for
// two seconds (each switch is a list of its grants; their watches' bookmarks
// and the answers to their reports, which at 5,000 nodes never pause for
// two seconds, do not count). A cluster's first
// selector on a new key is rare; what the switch costs is in docs/benchmarks.md.
func (b *bench) settleVocabulary(keys ...string) error {
	ctx := context.Background()
	selector := map[string]string{}
	for _, k := range keys {
		selector[k] = "bench-vocabulary"
	}
	na := nodeAccess("bench-vocabulary", selector, newKey("bench-vocabulary").line)
	if err := b.k8s.Create(ctx, na); err != nil {
		return fmt.Errorf("naming the vocabulary's keys: %w", err)
	}
	if err := waitFor(2*time.Minute, "the vocabulary naming "+fmt.Sprint(keys), func() error {
		cm := &corev1.ConfigMap{}
		if err := b.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: nodefilter.ConfigMapName}, cm); err != nil {
			return err
		}
		published := nodefilter.ParseKeys(cm.Data[nodefilter.KeysField])
		for _, k := range keys {
			if !slices.Contains(published, k) {
				return fmt.Errorf("published %v", published)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	last, quietSince := b.bytes.snapshot(), time.Now()
	return waitFor(5*time.Minute, "the agents' switch to the vocabulary", func() error {
		now := b.bytes.snapshot()
		if now.reads != last.reads {
			last, quietSince = now, time.Now()
		}
		if quiet := time.Since(quietSince); quiet < 2*time.Second {
			return fmt.Errorf("agents listed %d bytes until %s ago", now.reads, quiet)
		}
		return nil
	})
}
