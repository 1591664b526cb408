package agent

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// The agent's scheme holds the kinds it decodes and nothing else: Node,
// ConfigMap (the grant filter's vocabulary), the rendered grants, and the meta types of watches and lists. Registering all
// of Kubernetes' kinds, as a controller manager does, costs every node
// several MiB for kinds the agent never sees.
var (
	agentScheme = runtime.NewScheme()
	agentCodecs = serializer.NewCodecFactory(agentScheme)
)

func init() {
	addCoreTypes(agentScheme)
	if err := nav1.AddToScheme(agentScheme); err != nil {
		panic(err)
	}
}

// apiClient is all the agent may do with the API server: read Nodes and the
// rendered grants of one namespace, and apply its own node's report. Both
// REST clients share one HTTP client, so an agent holds one connection.
type apiClient struct {
	node string
	core *rest.RESTClient
	nav  *rest.RESTClient
}

func newAPIClient(base *rest.Config, node string) (*apiClient, error) {
	base = rest.CopyConfig(base)
	if base.UserAgent == "" {
		base.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	// No gzip: the API server compresses a streamed list's watch (how
	// informers list and watch) at every flush, for each connection apart,
	// so one grant change sent to N agents is compressed N times, while
	// its encoding is shared. An agent's events are a few KiB on the
	// cluster's own network; the CPU is the API server's, under churn.
	base.DisableCompression = true
	httpClient, err := rest.HTTPClientFor(base)
	if err != nil {
		return nil, fmt.Errorf("building HTTP client: %w", err)
	}
	restFor := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		cfg := rest.CopyConfig(base)
		cfg.GroupVersion = &gv
		cfg.APIPath = apiPath
		cfg.ContentType = runtime.ContentTypeJSON
		cfg.NegotiatedSerializer = newAgentSerializers()
		c, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
		if err != nil {
			return nil, fmt.Errorf("building API client for %s: %w", gv, err)
		}
		return c, nil
	}
	c := &apiClient{node: node}
	if c.core, err = restFor(coreGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if c.nav, err = restFor(nav1.GroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return c, nil
}

// applyReport server-side applies obj, the node's NodeAccessReport, or only
// its status subresource.
func (c *apiClient) applyReport(ctx context.Context, obj map[string]any, status bool) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	req := c.nav.Patch(types.ApplyPatchType).Resource("nodeaccessreports").Name(c.node)
	if status {
		req = req.SubResource("status")
	}
	// Fields a CRD older than this agent does not know are dropped, not
	// refused: during a rollout every field an older reader needs is one it knows.
	return req.Param("fieldManager", FieldOwner).Param("force", "true").Param("fieldValidation", "Ignore").Body(body).Do(ctx).Error()
}

// getReport reads the node's report, or returns nil when there is none.
func (c *apiClient) getReport(ctx context.Context) (*nav1.NodeAccessReport, error) {
	r := &nav1.NodeAccessReport{}
	err := c.nav.Get().Resource("nodeaccessreports").Name(c.node).Do(ctx).Into(r)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}
