package fleet

import (
	"context"
	"fmt"
	"strconv"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// applyWorkers bounds concurrent writes: enough to keep a local API server
// busy, few enough not to starve the other work on a small machine.
const applyWorkers = 16

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// client writes fleet objects at whatever version the server prefers.
type client struct {
	dyn    dynamic.Interface
	disco  discovery.DiscoveryInterface
	mapper meta.RESTMapper
}

func newClient(cfg *rest.Config) (*client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS < 200 { // a fleet is thousands of writes; don't throttle them client-side
		cfg.QPS, cfg.Burst = 1000, 2000
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	return &client{dyn: dyn, disco: disco, mapper: mapper}, nil
}

// resource maps a Flux kind to the server's preferred version of it.
func (c *client) resource(group, kind, ns string) (dynamic.ResourceInterface, string, error) {
	m, err := c.mapper.RESTMapping(schema.GroupKind{Group: group, Kind: kind})
	if err != nil {
		return nil, "", fmt.Errorf("map %s.%s: %w", kind, group, err)
	}
	return c.dyn.Resource(m.Resource).Namespace(ns), m.GroupVersionKind.GroupVersion().String(), nil
}

// servesNamespaces tells a full API server from a CRD-only one.
func (c *client) servesNamespaces() (bool, error) {
	list, err := c.disco.ServerResourcesForGroupVersion("v1")
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover core/v1: %w", err)
	}
	for _, r := range list.APIResources {
		if r.Name == "namespaces" {
			return true, nil
		}
	}
	return false, nil
}

func (c *client) ensureNamespaces(ctx context.Context, names []string) error {
	ok, err := c.servesNamespaces()
	if err != nil || !ok {
		return err
	}
	for _, ns := range names {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
		}}
		_, err := c.dyn.Resource(namespacesGVR).Create(ctx, obj, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	return nil
}

// Apply creates the fleet on the server as the Flux controllers would leave
// it: namespaces first when the server serves them (a CRD-only server takes
// custom resources in any namespace name), then each object, spec updates
// up to its planned generation, and finally its status through the status
// subresource.
func Apply(ctx context.Context, cfg *rest.Config, f *Fleet) error {
	c, err := newClient(cfg)
	if err != nil {
		return err
	}
	if err := c.ensureNamespaces(ctx, f.Namespaces); err != nil {
		return err
	}
	return c.createAll(ctx, f.Objects)
}

func (c *client) createAll(ctx context.Context, objs []*Object) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(applyWorkers)
	for _, o := range objs {
		g.Go(func() error { return c.create(ctx, o) })
	}
	return g.Wait()
}

// create writes one object. A generation above 1 comes from as many spec
// edits: each earlier spec differs from the final one by a longer interval.
func (c *client) create(ctx context.Context, o *Object) error {
	ri, apiVersion, err := c.resource(o.Group, o.Kind, o.Namespace())
	if err != nil {
		return err
	}
	obj := o.Object.DeepCopy()
	status, hasStatus := obj.Object["status"]
	delete(obj.Object, "status")
	obj.SetAPIVersion(apiVersion)
	finalSpec, _ := obj.Object["spec"].(map[string]any)

	steps := int(o.Generation)
	first, err := earlierSpec(o.Kind, finalSpec, steps-1)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", o.Kind, o.Namespace(), o.Name(), err)
	}
	obj.Object["spec"] = first
	created, err := ri.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create %s %s/%s: %w", o.Kind, o.Namespace(), o.Name(), err)
	}
	for left := steps - 2; left >= 0; left-- {
		created.Object["spec"], _ = earlierSpec(o.Kind, finalSpec, left)
		if created, err = ri.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update %s %s/%s: %w", o.Kind, o.Namespace(), o.Name(), err)
		}
	}
	if got := created.GetGeneration(); got != o.Generation {
		return fmt.Errorf("%s %s/%s: server generation %d, planned %d", o.Kind, o.Namespace(), o.Name(), got, o.Generation)
	}
	if !hasStatus {
		return nil
	}
	created.Object["status"] = status
	if _, err := ri.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s %s/%s: %w", o.Kind, o.Namespace(), o.Name(), err)
	}
	return nil
}

// earlierSpec is the spec as it was `back` edits before the final one: a
// longer interval, or for an ImagePolicy (which has none) another digest
// reflection policy. The suspension, when planned, is the last edit.
func earlierSpec(kind string, final map[string]any, back int) (map[string]any, error) {
	if back == 0 {
		return final, nil
	}
	s := make(map[string]any, len(final))
	for k, v := range final {
		s[k] = v
	}
	delete(s, "suspend")
	switch interval, ok := final["interval"].(string); {
	case ok:
		s["interval"] = interval + strconv.Itoa(back) + "s"
	case kind == KindImagePolicy:
		// The final spec leaves it to its default, Never.
		s["digestReflectionPolicy"] = []string{"Never", "IfNotPresent"}[back%2]
	default:
		return nil, fmt.Errorf("no spec field to edit for generation %d", back+1)
	}
	return s, nil
}

// FromManifest plans an object written by hand, such as a test input taken
// from a Flux bug report, so that Apply writes it as it writes generated
// ones: its metadata.generation (default 1) is reached by spec edits, which
// need a spec.interval to edit, and its status, if any, goes through the
// status subresource. Its State is left empty.
func FromManifest(u *unstructured.Unstructured) (*Object, error) {
	gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if u.GetKind() == "" || u.GetName() == "" {
		return nil, fmt.Errorf("manifest needs a kind and a name: %v", u.Object["metadata"])
	}
	gen := u.GetGeneration()
	if gen == 0 {
		gen = 1
	}
	if gen > 1 {
		if _, err := earlierSpec(u.GetKind(), mapAt(u.Object, "spec"), int(gen)-1); err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	obj := u.DeepCopy()
	unstructured.RemoveNestedField(obj.Object, "metadata", "generation")
	suspended, _, _ := unstructured.NestedBool(obj.Object, "spec", "suspend")
	return &Object{Group: gv.Group, Kind: u.GetKind(), Suspended: suspended, Generation: gen, Object: obj}, nil
}

func mapAt(obj map[string]any, key string) map[string]any {
	m, _ := obj[key].(map[string]any)
	return m
}
