// Command nodeaccess-scorecard is the operator's own scorecard test, shipped
// in the operator image and listed in bundle/tests/scorecard/config.yaml.
// Scorecard runs it in a pod with the bundle unpacked under /bundle; it also
// runs against any cluster from a workstation (`make scorecard-local`).
//
//	nodeaccess-scorecard [--bundle=/bundle] [--timeout=2m] [--kubeconfig=...] examples-become-ready
//
// examples-become-ready creates every NodeAccess of the CSV's alm-examples
// (under a generated name, so nothing of the user's is touched), waits until
// it is Ready (every selected node holds its keys), then deletes it and waits
// until every node has revoked them. It prints a scorecard v1alpha3
// TestStatus as JSON on stdout; with --exit-code it also exits 1 unless the
// test passed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/operator-framework/api/pkg/apis/scorecard/v1alpha3"
	"github.com/operator-framework/api/pkg/manifests"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// TestName is the one test this command runs.
const TestName = "examples-become-ready"

// createdByLabel marks the objects the test creates.
const createdByLabel = "scorecard.nodeaccess.io/test"

func main() {
	bundleDir := flag.String("bundle", "/bundle", "Directory of the operator bundle (manifests/, metadata/).")
	timeout := flag.Duration("timeout", 2*time.Minute, "How long each example may take to become Ready, and to be revoked.")
	exitCode := flag.Bool("exit-code", false, "Exit 1 unless the test passed (scorecard reads the JSON instead).")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] %s\n", os.Args[0], TestName)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || flag.Arg(0) != TestName {
		flag.Usage()
		os.Exit(2)
	}
	result := run(*bundleDir, *timeout)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v1alpha3.TestStatus{Results: []v1alpha3.TestResult{result}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *exitCode && result.State != v1alpha3.PassState {
		os.Exit(1)
	}
}

func run(bundleDir string, timeout time.Duration) v1alpha3.TestResult {
	r := v1alpha3.TestResult{Name: TestName, State: v1alpha3.PassState}
	fail := func(state v1alpha3.State, err error, suggestion string) v1alpha3.TestResult {
		r.State = state
		r.Errors = append(r.Errors, err.Error())
		if suggestion != "" {
			r.Suggestions = append(r.Suggestions, suggestion)
		}
		return r
	}
	examples, err := almExamples(bundleDir)
	if err != nil {
		return fail(v1alpha3.ErrorState, err, "")
	}
	if len(examples) == 0 {
		return fail(v1alpha3.FailState, errors.New("the CSV has no NodeAccess in alm-examples"), "add a realistic NodeAccess to alm-examples")
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fail(v1alpha3.ErrorState, fmt.Errorf("loading kubeconfig: %w", err), "")
	}
	scheme := runtime.NewScheme()
	_ = nav1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fail(v1alpha3.ErrorState, err, "")
	}
	var log strings.Builder
	for _, ex := range examples {
		msg, suggestion, err := tryExample(c, ex, timeout)
		log.WriteString(msg + "\n")
		if err != nil {
			r.State = v1alpha3.FailState
			r.Errors = append(r.Errors, err.Error())
			if suggestion != "" {
				r.Suggestions = append(r.Suggestions, suggestion)
			}
		}
	}
	r.Log = log.String()
	return r
}

// almExamples returns the NodeAccess objects of the bundle CSV's alm-examples.
func almExamples(bundleDir string) ([]*unstructured.Unstructured, error) {
	b, err := manifests.GetBundleFromDir(bundleDir)
	if err != nil {
		return nil, fmt.Errorf("reading the bundle in %s: %w", bundleDir, err)
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(b.CSV.Annotations["alm-examples"]), &all); err != nil {
		return nil, fmt.Errorf("parsing alm-examples: %w", err)
	}
	var out []*unstructured.Unstructured
	for _, obj := range all {
		u := &unstructured.Unstructured{Object: obj}
		if u.GroupVersionKind() == nav1.GroupVersion.WithKind("NodeAccess") {
			out = append(out, u)
		}
	}
	return out, nil
}

// tryExample creates one example under a generated name, waits for Ready,
// deletes it and waits until it is gone (its keys revoked everywhere).
func tryExample(c client.Client, ex *unstructured.Unstructured, timeout time.Duration) (msg, suggestion string, err error) {
	ctx := context.Background()
	example := ex.GetName()
	obj := ex.DeepCopy()
	obj.SetName("")
	obj.SetGenerateName(example + "-scorecard-")
	obj.SetLabels(map[string]string{createdByLabel: TestName})
	if err := c.Create(ctx, obj); err != nil {
		return fmt.Sprintf("%s: refused by the API server", example), "the example must pass the CRD's validation",
			fmt.Errorf("creating example %s: %w", example, err)
	}
	name := obj.GetName()
	start := time.Now()
	na := &nav1.NodeAccess{}
	readyErr := poll(ctx, timeout, func() error {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(na.Status.Conditions, nav1.ReadyCondition)
		switch {
		case cond == nil || cond.ObservedGeneration != na.Generation:
			return errors.New("no Ready condition for the current generation yet (is the operator running?)")
		case cond.Status != metav1.ConditionTrue:
			return fmt.Errorf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		return nil
	})
	readyIn := time.Since(start)

	// Always clean up, and check revocation while at it.
	delErr := client.IgnoreNotFound(c.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	if delErr == nil {
		delErr = poll(ctx, timeout, func() error {
			err := c.Get(ctx, client.ObjectKey{Name: name}, &nav1.NodeAccess{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there, nodes have not all confirmed the revocation (%v)", err)
		})
	}

	switch {
	case readyErr != nil:
		return fmt.Sprintf("%s (as %s): not Ready after %s: %v", example, name, timeout, readyErr),
			"the example's nodeSelector must select nodes running the agent, and its accounts must exist on them",
			fmt.Errorf("example %s did not become Ready: %w", example, errors.Join(readyErr, delErr))
	case delErr != nil:
		return fmt.Sprintf("%s (as %s): Ready in %s, but not revoked: %v", example, name, readyIn.Round(time.Millisecond), delErr),
			"", fmt.Errorf("example %s was not revoked: %w", example, delErr)
	}
	return fmt.Sprintf("%s (as %s): Ready on %d nodes with %d keys in %s, then revoked",
		example, name, na.Status.NodesInSync, na.Status.KeysGranted, readyIn.Round(time.Millisecond)), "", nil
}

func poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
