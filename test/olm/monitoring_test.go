package olm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/monitoring"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// monitoringCRDDir is where outside() writes the Prometheus operator's CRDs
// (generating them needs the Go toolchain, before the private network).
func monitoringCRDDir() string { return filepath.Join(workDir, "monitoring-crds") }

// monitoringObjects are the two objects the manager installs, by kind.
var monitoringObjects = map[string]string{"PrometheusRule": monitoring.RuleName, "ServiceMonitor": monitoring.ServiceMonitorName}

func monitoringObject(kind, name string) *metav1.PartialObjectMetadata {
	o := &metav1.PartialObjectMetadata{}
	o.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: kind})
	o.SetNamespace(installNamespace)
	o.SetName(name)
	return o
}

// managerSaysNotInstalling waits for the manager, installed by OLM on a
// cluster without the Prometheus operator, to say it installs nothing.
func managerSaysNotInstalling(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, timeout, "the manager says it installs no alerts", func() error {
		data, err := os.ReadFile(filepath.Join(logDir, "manager.log"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(data), "Not installing the alerts and the ServiceMonitor") {
			return fmt.Errorf("not said yet")
		}
		return nil
	})
}

// installPrometheusOperatorCRDs installs the PrometheusRule and
// ServiceMonitor CRDs, as installing the Prometheus operator would.
func installPrometheusOperatorCRDs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(monitoringCRDDir(), "all", "monitoring.coreos.com_*.yaml"))
	must(t, err)
	for _, f := range files {
		if !strings.Contains(f, "prometheusrules") && !strings.Contains(f, "servicemonitors") {
			continue
		}
		data, err := os.ReadFile(f)
		must(t, err)
		must(t, localcluster.ApplyYAML(ctx, k8s, data, nil))
	}
	for _, crd := range []string{"prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com"} {
		testenv.Eventually(t, timeout, crd+" established", func() error {
			obj := &apiextensionsv1.CustomResourceDefinition{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: crd}, obj); err != nil {
				return err
			}
			for _, c := range obj.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("not established")
		})
	}
}

// monitoringOwnedByTheDeployment waits for both objects, owned by the
// operator Deployment OLM created.
func monitoringOwnedByTheDeployment() error {
	ctx := context.Background()
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: deployment}, dep); err != nil {
		return err
	}
	for kind, name := range monitoringObjects {
		o := monitoringObject(kind, name)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			return fmt.Errorf("%s %s: %w", kind, name, err)
		}
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "Deployment" || refs[0].UID != dep.UID {
			return fmt.Errorf("%s %s owned by %+v, want the Deployment %s", kind, name, refs, dep.UID)
		}
	}
	return nil
}

// monitoringGone waits for both objects to be garbage-collected.
func monitoringGone() error {
	for kind, name := range monitoringObjects {
		o := monitoringObject(kind, name)
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s still there (%v)", kind, name, err)
		}
	}
	return nil
}

// uninstall removes the operator as a user does with OLM: the
// Subscription, then the CSV, whose Deployment OLM deletes.
func uninstall(t *testing.T, csvName string) {
	t.Helper()
	ctx := context.Background()
	must(t, client.IgnoreNotFound(k8s.Delete(ctx, &operatorsv1alpha1.Subscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: installNamespace, Name: packageName}})))
	must(t, client.IgnoreNotFound(k8s.Delete(ctx, &operatorsv1alpha1.ClusterServiceVersion{
		ObjectMeta: metav1.ObjectMeta{Namespace: installNamespace, Name: csvName}})))
	testenv.Eventually(t, timeout, "operator Deployment deleted", func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: deployment}, &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}
