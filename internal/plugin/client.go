package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// scheme holds the kinds the plugin reads and writes.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(admissionregistrationv1.AddToScheme(scheme))
	utilruntime.Must(nav1.AddToScheme(scheme))
}

// client returns an API client for the kubeconfig the flags name.
func (o *Options) client() (client.Client, error) {
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating API client: %w", err)
	}
	return c, nil
}

// operatorNamespace is where the rendered grants live: -n when given, else
// the one namespace holding rendered grants owned by NodeAccess objects. It
// is "" when no grant is rendered anywhere.
func (o *Options) operatorNamespace(ctx context.Context, c client.Client) (string, error) {
	if o.namespaceSet {
		return *o.ConfigFlags.Namespace, nil
	}
	var list nav1.RenderedNodeAccessList
	if err := c.List(ctx, &list); err != nil {
		return "", fmt.Errorf("finding the operator's namespace (or pass -n): %w", err)
	}
	seen := map[string]bool{}
	for _, r := range list.Items {
		for _, ref := range r.OwnerReferences {
			if ref.Kind == "NodeAccess" && ref.APIVersion == nav1.GroupVersion.String() && string(ref.UID) == r.Spec.NodeAccessUID {
				seen[r.Namespace] = true
			}
		}
	}
	namespaces := make([]string, 0, len(seen))
	for ns := range seen {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	switch len(namespaces) {
	case 0:
		return "", nil
	case 1:
		return namespaces[0], nil
	}
	return "", fmt.Errorf("rendered grants are in several namespaces (%s): pass -n with the operator's namespace", strings.Join(namespaces, ", "))
}

// rendered lists the rendered grants of the operator's namespace, as the
// agents read them.
func (o *Options) rendered(ctx context.Context, c client.Client) ([]nav1.RenderedNodeAccess, error) {
	ns, err := o.operatorNamespace(ctx, c)
	if err != nil || ns == "" {
		return nil, err
	}
	var list nav1.RenderedNodeAccessList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// reports returns every node report by node name.
func reports(ctx context.Context, c client.Client) (map[string]*nav1.NodeAccessReport, error) {
	var list nav1.NodeAccessReportList
	if err := c.List(ctx, &list); err != nil {
		return nil, err
	}
	out := make(map[string]*nav1.NodeAccessReport, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

// nodes returns every Node by name.
func nodes(ctx context.Context, c client.Client) (map[string]*corev1.Node, error) {
	var list corev1.NodeList
	if err := c.List(ctx, &list); err != nil {
		return nil, err
	}
	out := make(map[string]*corev1.Node, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

// labelsOf maps node names to their labels, for desiredstate.SelectedNodes.
func labelsOf(ns map[string]*corev1.Node) map[string]map[string]string {
	out := make(map[string]map[string]string, len(ns))
	for name, n := range ns {
		out[name] = n.Labels
	}
	return out
}
