package collector

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// Decoder turns Flux objects into Records; its Decode method is the
// informer transform. It holds every option that shapes a record and the
// delivery tracker that decoding feeds, so that decoding has no global
// state: two exporters in one process, as in tests, decode independently.
// A Decoder is safe for concurrent use once made.
type Decoder struct {
	on                  familySet
	labels, annotations *MetadataAllowlist
	gotkResourceInfo    bool
	delivery            *deliveryTracker
}

// DecoderOptions configure NewDecoder. The zero value renders every family
// that is not opt-in, and no labels or annotations.
type DecoderOptions struct {
	// Filter leaves out the families it does not export
	// (--metric-allowlist, --metric-denylist, --metric-opt-in-list): they
	// cost neither memory nor scrape time. Nil exports every family that
	// is not opt-in.
	Filter *MetricFilter
	// Labels and Annotations select the Kubernetes labels and annotations
	// exported per kind (flux_resource_labels, flux_resource_annotations);
	// nil exports none.
	Labels, Annotations *MetadataAllowlist
	// GotkResourceInfo writes gotk_resource_info
	// (--compat.gotk-resource-info).
	GotkResourceInfo bool
	// CountSince is when the exporter started: the delivery counters
	// count only the changes, failures and restores Flux recorded after
	// it, so that a restart does not count again what status.history
	// still holds (docs/delivery.md, "Restarts"). The zero time counts
	// everything status.history holds.
	CountSince time.Time
}

// NewDecoder applies the filter once, to the family list, and starts an
// empty delivery tracker.
func NewDecoder(o DecoderOptions) *Decoder {
	on := make(familySet, len(families))
	for _, f := range families {
		on[f.id] = o.Filter.Exports(f.catalogued())
	}
	return &Decoder{on: on, labels: o.Labels, annotations: o.Annotations,
		gotkResourceInfo: o.GotkResourceInfo, delivery: newDeliveryTracker(on, o.CountSince)}
}

// groupLabels are the labels --metric-labels-allowlist selects for the
// object, which its delivery group carries (delivery_groups.go).
func (d *Decoder) groupLabels(k kube.Kind, r *reader) []labelPair {
	keys, ok := d.labels.keysFor(k.Resource)
	if !ok {
		return nil
	}
	return metadataLabels("label", selected(r.stringMap("metadata", "labels"), keys))
}

// familySet is which per-object families a Decoder renders, by family id;
// nil renders them all.
type familySet []bool

func (s familySet) has(f *family) bool { return s == nil || s[f.id] }

// Decode is the informer transform: it reads an object of kind k and
// renders its series into a Record, and returns the faults it met. A faulty
// field costs only that field. prev is the cache's record of the same
// namespace and name, or nil: a failure that started before this update
// keeps its start (lifecycle.go).
func (d *Decoder) Decode(k kube.Kind, u *unstructured.Unstructured, prev *Record) (*Record, []error) {
	r := &reader{obj: u.Object}
	rec := &Record{Namespace: r.str("metadata", "namespace"), Name: r.str("metadata", "name"), uid: hashUID(r.str("metadata", "uid"))}
	w := recordWriter{rec: rec, r: r, on: d.on, object: []string{k.Kind, rec.Name, rec.Namespace}}
	object, err := appendObjectLabels(nil, w.object)
	if err != nil {
		// Kubernetes names are ASCII; a kind name is too. Nothing of such
		// an object could be exposed.
		r.fail([]any{"metadata"}, err)
		return rec, r.errs
	}
	rec.object = object
	spec := specFor(k.Kind)
	conds := r.conditions()
	ready := w.addObject(k, spec, conds)
	w.addLifecycle(spec, ready, conds, previousRecord(prev, rec.uid))
	w.addMetadata(k, d.labels, d.annotations)
	if d.gotkResourceInfo {
		w.addGotkResourceInfo(k, conds)
	}
	if rev := r.str("status", "artifact", "revision"); rev != "" {
		updated, _ := r.timestamp("status", "artifact", "lastUpdateTime")
		d.delivery.sawArtifact(objectKey{k.Kind, rec.Namespace, rec.Name}, rev, updated)
	}
	if k.Kind == "Kustomization" || k.Kind == "HelmRelease" {
		rec.delivery = d.delivery.observe(k.Kind, rec, r, conds, d.groupLabels(k, r))
	}
	rec.groupByFamily()
	return rec, r.errs
}
