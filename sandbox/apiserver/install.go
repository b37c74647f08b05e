package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/flux-exporter/flux_exporter/sandbox/crds"
)

const (
	// installTimeout bounds the wait for CRDs to become Established and servable.
	installTimeout = 60 * time.Second
	// createSleepWindow mirrors apiextensions-apiserver: a create within two
	// seconds of a CRD's Established transition sleeps two seconds server-side.
	createSleepWindow = 2 * time.Second
)

// InstallFluxCRDs installs the Flux CRDs embedded in sandbox/crds: the real
// toolkit ones and our FluxInstance, ResourceSet and FluxReport of the Flux
// Operator's group, which does not end in .fluxcd.io and so proves that
// discovery follows --flux.api-groups.
func (s *Server) InstallFluxCRDs(ctx context.Context) error {
	manifests, err := crds.Flux()
	if err != nil {
		return fmt.Errorf("load Flux CRDs: %w", err)
	}
	return s.InstallCRDs(ctx, manifests...)
}

// InstallCRDs creates (or replaces) the CustomResourceDefinitions in the given
// YAML or JSON manifests, each possibly holding several documents. It returns
// once every CRD is Established, a LIST on each served version succeeds (the
// first ones answer 429 while the watch cache starts), and the window in which
// the server delays the first create has passed, so callers see a warm server.
func (s *Server) InstallCRDs(ctx context.Context, manifests ...[]byte) error {
	var want []*apiextensionsv1.CustomResourceDefinition
	for i, m := range manifests {
		docs, err := decodeCRDs(m)
		if err != nil {
			return fmt.Errorf("manifest %d: %w", i, err)
		}
		want = append(want, docs...)
	}
	if len(want) == 0 {
		return errors.New("no CustomResourceDefinition in the manifests")
	}
	cfg := s.RESTConfig()
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create apiextensions client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create dynamic client: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, installTimeout)
	defer cancel()
	for _, crd := range want {
		if err := applyCRD(ctx, client, crd); err != nil {
			return err
		}
	}
	var lastEstablished time.Time
	for _, crd := range want {
		established, err := waitEstablished(ctx, client, crd.Name)
		if err != nil {
			return err
		}
		if established.After(lastEstablished) {
			lastEstablished = established
		}
		if err := warmUp(ctx, dyn, crd); err != nil {
			return err
		}
	}
	// The transition time has whole-second precision, so this waits at most
	// two seconds, once for all CRDs.
	return sleepCtx(ctx, time.Until(lastEstablished.Add(createSleepWindow)))
}

func decodeCRDs(manifest []byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*apiextensionsv1.CustomResourceDefinition
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		err := dec.Decode(crd)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode document %d: %w", len(out)+1, err)
		}
		if crd.Kind == "" && crd.Name == "" {
			continue // empty document between separators
		}
		if crd.Kind != "CustomResourceDefinition" || crd.APIVersion != apiextensionsv1.SchemeGroupVersion.String() {
			return nil, fmt.Errorf("document %q is %s %s, want %s CustomResourceDefinition",
				crd.Name, crd.APIVersion, crd.Kind, apiextensionsv1.SchemeGroupVersion)
		}
		out = append(out, crd)
	}
}

func applyCRD(ctx context.Context, client clientset.Interface, crd *apiextensionsv1.CustomResourceDefinition) error {
	crds := client.ApiextensionsV1().CustomResourceDefinitions()
	_, err := crds.Create(ctx, crd, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		return nil
	}
	existing, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get existing CRD %s: %w", crd.Name, err)
	}
	crd.ResourceVersion = existing.ResourceVersion
	if _, err := crds.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("replace CRD %s: %w", crd.Name, err)
	}
	return nil
}

// waitEstablished returns when the CRD was Established.
func waitEstablished(ctx context.Context, client clientset.Interface, name string) (time.Time, error) {
	var last string
	for {
		crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err != nil:
			last = err.Error()
		default:
			last = "conditions " + conditionSummary(crd)
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return c.LastTransitionTime.Time, nil
				}
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return time.Time{}, fmt.Errorf("CRD %s not Established (%s): %w", name, last, err)
		}
	}
}

// warmUp lists every served version until the server answers; a fresh CRD's
// watch cache answers 429 at first.
func warmUp(ctx context.Context, dyn dynamic.Interface, crd *apiextensionsv1.CustomResourceDefinition) error {
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: v.Name, Resource: crd.Spec.Names.Plural}
		for {
			_, listErr := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			if listErr == nil {
				break
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("list %s never succeeded (last: %v): %w", gvr, listErr, err)
			}
		}
	}
	return nil
}

func conditionSummary(crd *apiextensionsv1.CustomResourceDefinition) string {
	var b bytes.Buffer
	for i, c := range crd.Status.Conditions {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%s (%s)", c.Type, c.Status, c.Reason)
	}
	if b.Len() == 0 {
		return "none yet"
	}
	return b.String()
}

// sleepCtx sleeps for d, or returns the context's error if it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
