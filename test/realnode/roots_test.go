package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// Homes outside /home get their keys once their home root is configured:
// through the Subscription's spec.config.env, which OLM puts on the
// manager's Deployment, the manager renders the agent DaemonSet with the
// home root as one more host path and rolls it. Before, the grant is
// HomeNotMounted. Root gets its key in /root only with
// NODEACCESS_ALLOW_ROOT_USER: before, the manager refuses the account
// (UserRefused) and no node ever sees the key; after, /root is mounted
// too and root logs in (the node's sshd permits root key logins).
func TestHomeRootsAndRootAreSetThroughTheSubscription(t *testing.T) {
	ctx := context.Background()
	useradd(t, "carol", 2003, extraHomeRoot+"/carol")
	carolKey, carolPub := newKey(t, "carol@laptop")
	rootKey, rootPub := newKey(t, "root@laptop")
	create(t, grant("homes",
		nav1.UserAccess{Name: "carol", Keys: []nav1.AuthorizedKey{{Key: carolPub}}},
		nav1.UserAccess{Name: "root", Keys: []nav1.AuthorizedKey{{Key: rootPub}}}))
	testenv.Eventually(t, timeout, "carol HomeNotMounted", failingWith("homes", nav1.HomeNotMountedReason))
	testenv.Eventually(t, timeout, "root refused", func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "homes"}, na); err != nil {
			return err
		}
		for _, r := range na.Status.RefusedKeys {
			if r.User == "root" && r.Reason == nav1.UserRefusedReason && strings.Contains(r.Message, "--allow-root-user") {
				return nil
			}
		}
		return fmt.Errorf("refused keys %+v", na.Status.RefusedKeys)
	})
	for user, key := range map[string]string{"carol": carolKey, "root": rootKey} {
		if err := login(user, key); !errors.Is(err, errRefused) {
			t.Fatalf("%s before the change: %v, want refused", user, err)
		}
	}
	if _, err := os.Stat("/root/.ssh/authorized_keys"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root's authorized_keys exists before root is allowed: %v", err)
	}

	roots := []string{"/home", extraHomeRoot}
	start := time.Now()
	setSubscriptionEnv(t, append(slices.Clone(installEnv),
		corev1.EnvVar{Name: "NODEACCESS_HOME_ROOTS", Value: strings.Join(roots, ",")},
		corev1.EnvVar{Name: "NODEACCESS_ALLOW_ROOT_USER", Value: "true"}))
	t.Cleanup(func() {
		// Revoke first, while root is allowed, then put the install's settings back.
		remove(t, "homes")
		setSubscriptionEnv(t, installEnv)
		testenv.Eventually(t, timeout, "the agents back to the defaults", func() error { return agentRolledOut(agentDaemonSetFor(nil, false)) })
	})
	testenv.Eventually(t, timeout, "the agents rolled with /var/home and /root", func() error {
		return agentRolledOut(agentDaemonSetFor(roots, true))
	})
	rolled := time.Since(start)
	carolTook := waitLogin(t, "carol", carolKey, start, timeout)
	rootTook := waitLogin(t, "root", rootKey, start, timeout)
	t.Logf("Subscription changed: agents rolled in %s, carol logs in after %s, root after %s",
		rolled.Round(100*time.Millisecond), carolTook.Round(100*time.Millisecond), rootTook.Round(100*time.Millisecond))
	testenv.Eventually(t, timeout, "homes in sync", inSync("homes"))
	compareAgentPod(t, agentPod(t), renderedAgent(roots, true))
	checkHandWritten(t)
}

// setSubscriptionEnv sets the Subscription's spec.config.env and waits
// until OLM has put it on the manager's Deployment and the new manager
// runs.
func setSubscriptionEnv(t *testing.T, env []corev1.EnvVar) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, timeout, "the Subscription updated", func() error {
		sub := &operatorsv1alpha1.Subscription{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: packageName}, sub); err != nil {
			return err
		}
		sub.Spec.Config = &operatorsv1alpha1.SubscriptionConfig{Env: env}
		return k8s.Update(ctx, sub)
	})
	testenv.Eventually(t, timeout, "OLM's Deployment with the Subscription's environment, its manager running", func() error {
		dep := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: managerDeployment}, dep); err != nil {
			return err
		}
		have := dep.Spec.Template.Spec.Containers[0].Env
		for _, e := range env {
			if !slices.Contains(have, e) {
				return fmt.Errorf("the Deployment's environment %v lacks %s", have, e.Name)
			}
		}
		for _, e := range have {
			if strings.HasPrefix(e.Name, "NODEACCESS_") && !slices.Contains(env, e) {
				return fmt.Errorf("the Deployment still has %s", e.Name)
			}
		}
		if s := dep.Status; s.ObservedGeneration != dep.Generation || s.UpdatedReplicas != 1 || s.AvailableReplicas != 1 || s.Replicas != 1 {
			return fmt.Errorf("the manager's rollout: %+v; pods %s", s, managerPodStates())
		}
		_, err := managerPod(ctx)
		return err
	})
}

// agentDaemonSetFor checks that the agent DaemonSet is rendered for these
// home roots and root setting.
func agentDaemonSetFor(roots []string, allowRoot bool) func(*appsv1.DaemonSet) error {
	want := renderedAgent(roots, allowRoot)
	return func(ds *appsv1.DaemonSet) error {
		got := ds.Spec.Template.Spec
		if !slices.Equal(got.Containers[0].Args, want.Containers[0].Args) || len(got.Volumes) != len(want.Volumes) {
			return fmt.Errorf("agent DaemonSet args %v with %d volumes, want %v with %d", got.Containers[0].Args, len(got.Volumes), want.Containers[0].Args, len(want.Volumes))
		}
		return nil
	}
}

// managerPodStates says what each manager pod is doing, for a rollout
// that does not finish.
func managerPodStates() string {
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		return err.Error()
	}
	var states []string
	for _, p := range pods.Items {
		s := p.Name + " " + string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			s += " terminating"
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				s += fmt.Sprintf(" %s=%s (%s)", c.Type, c.Status, c.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			s += fmt.Sprintf(" ready=%v restarts=%d %+v", cs.Ready, cs.RestartCount, cs.State)
		}
		states = append(states, s)
	}
	return strings.Join(states, "; ")
}
