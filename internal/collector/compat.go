package collector

import (
	"strconv"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// gotk_resource_info as Flux's official monitoring example produces it:
// fluxcd/flux2-monitoring-example configures kube-state-metrics' custom
// resource state metrics (monitoring/controllers/kube-prometheus-stack/
// kube-state-metrics-config.yaml) to export it for thirteen Flux kinds, and
// its "Flux Cluster Stats" dashboard reads it. With
// --compat.gotk-resource-info the exporter writes the same series, so that
// dashboard works without kube-state-metrics; docs/compat.md lists every
// label and each difference.
//
// Label by label, as kube-state-metrics writes them: customresource_group,
// _kind and _version name the kind; name and exported_namespace the object;
// ready is the Ready condition's status and suspended spec.suspend spelt
// true or false, each absent when the object has none; the per-kind labels
// below are absent when their field is. A label kube-state-metrics would
// leave out is left out here too, rather than written empty.
var gotkResourceInfoFamily = dynamicFamily("gotk_resource_info",
	"The current state of a Flux resource, with the labels of the kube-state-metrics configuration in fluxcd/flux2-monitoring-example, for its dashboards (--compat.gotk-resource-info; labels per kind in docs/compat.md). Value is always 1.",
	"customresource_group", "customresource_kind", "customresource_version", "exported_namespace", "name", "ready", "suspended",
	"revision", "source_name", "url", "chart_name", "chart_app_version", "chart_ref_name", "chart_source_name", "chart_version",
	"endpoint", "bucket_name", "webhook_path", "image")

// gotkKind is what the upstream configuration exports for one kind: the
// ready label unless noReady, and its own labels.
type gotkKind struct {
	noReady bool
	labels  []labelSpec
}

// gotkKinds is the upstream configuration's table, by group and kind. URLs
// and the Receiver's webhook path are redacted, as everywhere in the
// exporter (docs/metrics.md), where kube-state-metrics copies them verbatim.
var gotkKinds = map[[2]string]gotkKind{
	{"kustomize.toolkit.fluxcd.io", "Kustomization"}: {labels: []labelSpec{
		{"revision", from("status.lastAppliedRevision")},
		{"source_name", from("spec.sourceRef.name")},
	}},
	{"helm.toolkit.fluxcd.io", "HelmRelease"}: {labels: []labelSpec{
		{"revision", from("status.history[0].chartVersion")},
		{"chart_name", from("status.history[0].chartName")},
		{"chart_app_version", from("status.history[0].appVersion")},
		{"chart_ref_name", from("spec.chartRef.name")},
		{"chart_source_name", from("spec.chart.spec.sourceRef.name")},
	}},
	{"source.toolkit.fluxcd.io", "GitRepository"}: {labels: []labelSpec{
		{"revision", from("status.artifact.revision")},
		{"url", from("spec.url").as(redactedURL)},
	}},
	{"source.toolkit.fluxcd.io", "Bucket"}: {labels: []labelSpec{
		{"revision", from("status.artifact.revision")},
		{"endpoint", from("spec.endpoint").as(redactedURL)},
		{"bucket_name", from("spec.bucketName")},
	}},
	{"source.toolkit.fluxcd.io", "HelmRepository"}: {labels: []labelSpec{
		{"revision", from("status.artifact.revision")},
		{"url", from("spec.url").as(redactedURL)},
	}},
	{"source.toolkit.fluxcd.io", "HelmChart"}: {labels: []labelSpec{
		{"revision", from("status.artifact.revision")},
		{"chart_name", from("spec.chart")},
		{"chart_version", from("spec.version")},
	}},
	{"source.toolkit.fluxcd.io", "OCIRepository"}: {labels: []labelSpec{
		{"revision", from("status.artifact.revision")},
		{"url", from("spec.url").as(redactedURL)},
	}},
	{"notification.toolkit.fluxcd.io", "Alert"}:    {noReady: true},
	{"notification.toolkit.fluxcd.io", "Provider"}: {noReady: true},
	{"notification.toolkit.fluxcd.io", "Receiver"}: {labels: []labelSpec{
		{"webhook_path", from("status.webhookPath").as(redactedPath)},
	}},
	{"image.toolkit.fluxcd.io", "ImageRepository"}: {labels: []labelSpec{
		{"image", from("spec.image").as(redactedURL)},
	}},
	{"image.toolkit.fluxcd.io", "ImagePolicy"}: {labels: []labelSpec{
		{"source_name", from("spec.imageRepositoryRef.name")},
	}},
	{"image.toolkit.fluxcd.io", "ImageUpdateAutomation"}: {labels: []labelSpec{
		{"source_name", from("spec.sourceRef.name")},
	}},
}

// The compatibility table's paths are read by Decode like the kind table's.
func init() {
	for _, k := range gotkKinds {
		for _, l := range k.labels {
			for _, p := range l.from.paths {
				paths[p] = parsePath(p)
			}
		}
	}
}

// addGotkResourceInfo writes the object's gotk_resource_info when the
// upstream configuration covers its kind.
func (w *recordWriter) addGotkResourceInfo(k kube.Kind, conds []condition) {
	spec, ok := gotkKinds[[2]string{k.Group, k.Kind}]
	if !ok || !w.on.has(gotkResourceInfoFamily) {
		return
	}
	pairs := make([]labelPair, 0, 7+len(spec.labels))
	pairs = append(pairs,
		labelPair{"customresource_group", k.Group},
		labelPair{"customresource_kind", k.Kind},
		labelPair{"customresource_version", k.Version},
		labelPair{"name", w.object[1]},
		labelPair{"exported_namespace", w.object[2]},
	)
	if !spec.noReady {
		for _, c := range conds {
			if c.typ == "Ready" {
				// The first, as kube-state-metrics' path lookup takes it;
				// a second would repeat the label.
				pairs = append(pairs, labelPair{"ready", c.status})
				break
			}
		}
	}
	// kube-state-metrics formats the field with %v: true or false.
	if b, ok := w.r.boolean("spec", "suspend"); ok {
		pairs = append(pairs, labelPair{"suspended", strconv.FormatBool(b)})
	}
	for _, l := range spec.labels {
		if v := w.r.label(l.from); v != "" {
			pairs = append(pairs, labelPair{l.name, v})
		}
	}
	w.addLabeled(gotkResourceInfoFamily, 1, pairs)
}
