package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/crds"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// fleetGolden is the normalised per-object part of a full scrape of the
// sandbox fleet below; `go test -run TestFleetScrape -update` rewrites it.
var fleetGolden = filepath.Join("testdata", "fleet-scrape.prom")

// fleetOptions fix the fleet: the same seed always gives the same objects
// and statuses, so the scrape is reproducible apart from what the server
// assigns (UIDs, creation times).
// Seed 2 gives this size every family the fleet can show, the image ones
// included.
var fleetOptions = fleet.Options{Seed: 2, Objects: 60, Namespaces: 3}

// fleetCannotProduce are documented families this fleet cannot produce: a
// CRD-only server has no Flux controller Deployments or Pods to scrape (only
// flux_distribution_info, with version "", is reported without them), and
// the events endpoint is off unless --events.enabled is given.
var fleetCannotProduce = []string{
	"flux_controller_active_workers",
	"flux_controller_cpu_seconds_total",
	"flux_controller_goroutines",
	"flux_controller_info",
	"flux_controller_max_concurrent_reconciles",
	"flux_controller_reconcile_duration_seconds",
	"flux_controller_reconcile_errors_total",
	"flux_controller_reconcile_total",
	"flux_controller_replicas_desired",
	"flux_controller_replicas_ready",
	"flux_controller_resident_memory_bytes",
	"flux_controller_scrape_duration_seconds",
	"flux_controller_scrape_success",
	"flux_controller_workqueue_depth",
	"flux_controller_workqueue_longest_running_processor_seconds",
	"flux_controller_workqueue_retries_total",
	// This 60-object fleet has no rolled-back HelmRelease; TestDeliveryKeys
	// drives one through a rollback.
	"flux_delivery_last_rollback_info",
	"flux_event_last_timestamp_seconds",
	"flux_event_revision_info",
	"flux_events_dropped_total",
	"flux_events_requests_total",
	"flux_events_total",
	// Deletion is pending only between a delete and the finalizer's
	// removal; this fleet deletes nothing. TestAlertTimelines'
	// kustomization-deletion holds one stuck in deletion.
	"flux_resource_deletion_timestamp_seconds",
	"flux_resource_finalizer_info",
	// A CRD-only server serves no core/v1 Events; TestNotificationControllerLive
	// reads these from the real notification-controller's.
	"flux_notification_dispatch_failures_total",
	"flux_notification_last_dispatch_failure_timestamp_seconds",
}

// TestFleetScrape scrapes the real exporter binary over HTTP after the
// sandbox fleet has been applied to a real API server, and checks the full
// scrape four ways: against a golden file, with promtool, against the
// metrics reference, and against the objects the server lists.
func TestFleetScrape(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install Debian's prometheus package (apt-get update && apt-get install -y prometheus)", err)
	}
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(fleetOptions)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The server stores creation times in whole seconds.
	applyStart := time.Now().Truncate(time.Second)
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	applyEnd := time.Now().Add(time.Second)

	listed := listFluxObjects(t, c)
	if n := countListed(listed); n != fleetOptions.Objects {
		t.Fatalf("server lists %d Flux objects, the fleet has %d", n, fleetOptions.Objects)
	}

	// The label and annotation families are off by default; named kinds
	// get one series per object.
	e := startExporter(t, c.kubeconfig,
		"--metric-labels-allowlist=kustomizations=[kustomize.toolkit.fluxcd.io/name]",
		"--metric-annotations-allowlist=fluxinstances=[fluxcd.controlplane.io/*]")
	e.waitReady()
	var s scrape
	eventually(t, 30*time.Second, func() error {
		s = e.scrape()
		for kind, objs := range listed {
			if got := len(s.find("flux_resource_info", map[string]string{"kind": kind})); got != len(objs) {
				return fmt.Errorf("%s: %d flux_resource_info series, the server lists %d", kind, got, len(objs))
			}
		}
		return nil
	})

	t.Run("agrees with the server", func(t *testing.T) { checkAgainstServer(t, s, listed, applyStart, applyEnd) })
	t.Run("golden", func(t *testing.T) { checkFleetGolden(t, s) })
	t.Run("promtool", func(t *testing.T) { checkPromtool(t, promtool, s.text) })
	t.Run("documented", func(t *testing.T) { checkDocumented(t, s) })
}

// listFluxObjects lists every object of every kind in the Flux CRDs, read
// straight from the CRD manifests rather than from the exporter's discovery.
func listFluxObjects(t *testing.T, c *cluster) map[string][]unstructured.Unstructured {
	t.Helper()
	manifests, err := crds.Flux()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]unstructured.Unstructured{}
	for _, m := range manifests {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(m, &crd); err != nil {
			t.Fatalf("decode CRD: %v", err)
		}
		i := slices.IndexFunc(crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Served })
		if i < 0 {
			t.Fatalf("CRD %s serves no version", crd.Name)
		}
		gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: crd.Spec.Versions[i].Name, Resource: crd.Spec.Names.Plural}
		list, err := c.dyn.Resource(gvr).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", gvr, err)
		}
		out[crd.Spec.Names.Kind] = list.Items
	}
	return out
}

func countListed(listed map[string][]unstructured.Unstructured) int {
	n := 0
	for _, objs := range listed {
		n += len(objs)
	}
	return n
}

// checkAgainstServer compares the scrape with the listed objects, computing
// what each label should be from the objects themselves.
func checkAgainstServer(t *testing.T, s scrape, listed map[string][]unstructured.Unstructured, applyStart, applyEnd time.Time) {
	for kind, objs := range listed {
		if got := len(s.find("flux_resource_info", map[string]string{"kind": kind})); got != len(objs) {
			t.Errorf("%s: %d flux_resource_info series, the server lists %d objects", kind, got, len(objs))
		}
		if v, ok := s.value("flux_exporter_kind_objects", map[string]string{"kind": kind}); !ok || v != float64(len(objs)) {
			t.Errorf("%s: flux_exporter_kind_objects = %v (found %v), the server lists %d objects", kind, v, ok, len(objs))
		}
		for _, u := range objs {
			id := map[string]string{"kind": kind, "exported_namespace": u.GetNamespace(), "name": u.GetName()}
			where := fmt.Sprintf("%s %s/%s", kind, u.GetNamespace(), u.GetName())
			infos := s.find("flux_resource_info", id)
			if len(infos) != 1 {
				t.Errorf("%s: %d flux_resource_info series, want 1", where, len(infos))
				continue
			}
			suspended := "False"
			if sus, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); sus {
				suspended = "True"
			}
			got := labels(infos[0])
			want := map[string]string{"suspended": suspended, "uid": string(u.GetUID())}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: flux_resource_info %s=%q, the object says %q", where, k, got[k], v)
				}
			}
			// The Ready condition as kubectl shows it; the ready label is
			// what flux get prints, which TestFluxCLIParity checks.
			readyConds := s.find("flux_resource_condition", map[string]string{"kind": kind, "exported_namespace": u.GetNamespace(), "name": u.GetName(), "type": "Ready"})
			switch status, reason, ok := readyCondition(u); {
			case !ok && len(readyConds) != 0:
				t.Errorf("%s: a Ready condition series, but the object has no Ready condition", where)
			case ok && len(readyConds) != 1:
				t.Errorf("%s: %d Ready condition series, want 1", where, len(readyConds))
			case ok:
				if l := labels(readyConds[0]); l["status"] != status || l["reason"] != reason {
					t.Errorf("%s: Ready condition %s/%s, the object says %s/%s", where, l["status"], l["reason"], status, reason)
				}
			}
			created := u.GetCreationTimestamp().Time
			if v, ok := s.value("flux_resource_created_timestamp_seconds", id); !ok || v != float64(created.Unix()) {
				t.Errorf("%s: created timestamp %v (found %v), the object says %d", where, v, ok, created.Unix())
			}
			if created.Before(applyStart) || created.After(applyEnd) {
				t.Errorf("%s: created at %s, outside the apply window %s..%s", where, created, applyStart, applyEnd)
			}
		}
	}
	// No series for objects the server does not have.
	for _, m := range s.find("flux_resource_info", nil) {
		l := labels(m)
		objs := listed[l["kind"]]
		if !slices.ContainsFunc(objs, func(u unstructured.Unstructured) bool {
			return u.GetNamespace() == l["exported_namespace"] && u.GetName() == l["name"]
		}) {
			t.Errorf("flux_resource_info for %s %s/%s, which the server does not list", l["kind"], l["exported_namespace"], l["name"])
		}
	}
}

// readyCondition is the status and reason of the Ready condition; ok is
// false when the object has none.
func readyCondition(u unstructured.Unstructured) (status, reason string, ok bool) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			status, _ = m["status"].(string)
			reason, _ = m["reason"].(string)
			return status, reason, true
		}
	}
	return "", "", false
}

// checkFleetGolden keeps the per-object families of the scrape (those with
// exported_namespace) in a file, with UIDs and creation times, which the
// server assigns, replaced by placeholders; checkAgainstServer verifies them.
func checkFleetGolden(t *testing.T, s scrape) {
	got := normalisedFleetScrape(t, s)
	if *update {
		if err := os.WriteFile(fleetGolden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(fleetGolden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it, then review it)", err)
	}
	if want := string(raw); got != want {
		t.Errorf("scrape differs from %s (run with -update and review the diff):\n%s", fleetGolden, lineDiff(want, got))
	}
}

func normalisedFleetScrape(t *testing.T, s scrape) string {
	t.Helper()
	names := make([]string, 0, len(s.fams))
	for name, fam := range s.fams {
		if strings.HasPrefix(name, "flux_") && perObject(fam) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, name := range names {
		fam := proto.Clone(s.fams[name]).(*dto.MetricFamily)
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "uid" {
					lp.Value = ptr("UID")
				}
			}
			if name == "flux_resource_created_timestamp_seconds" {
				m.GetGauge().Value = ptr(0.0)
			}
		}
		// The exporter writes a family's series in cache order; the
		// golden file keeps them sorted, as Prometheus ignores the order.
		slices.SortFunc(fam.Metric, func(a, b *dto.Metric) int { return strings.Compare(labelKey(labels(a)), labelKey(labels(b))) })
		if _, err := expfmt.MetricFamilyToText(&b, fam); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func perObject(fam *dto.MetricFamily) bool {
	for _, m := range fam.GetMetric() {
		if _, ok := labels(m)["exported_namespace"]; !ok {
			return false
		}
	}
	return len(fam.GetMetric()) > 0
}

func ptr[T any](v T) *T { return &v }

// lineDiff lists the lines only one side has, enough to see what changed.
func lineDiff(want, got string) string {
	const limit = 40
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for _, l := range wantLines {
		if !slices.Contains(gotLines, l) && len(out) < limit {
			out = append(out, "- "+l)
		}
	}
	for _, l := range gotLines {
		if !slices.Contains(wantLines, l) && len(out) < 2*limit {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// checkPromtool runs `promtool check metrics` on the raw scrape. Any
// problem it reports fails the test.
func checkPromtool(t *testing.T, promtool, text string) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Errorf("promtool check metrics exited %d:\n%s", exit.ExitCode(), out)
	case err != nil:
		t.Fatalf("run promtool: %v", err)
	case len(bytes.TrimSpace(out)) > 0:
		t.Errorf("promtool check metrics reported:\n%s", out)
	}
}

var docRow = regexp.MustCompile("(?m)^\\| `(flux_[a-z0-9_]+)` \\|")

// checkDocumented: every flux_ family in the scrape is in the metrics
// reference, and every documented family is in the scrape unless this fleet
// cannot produce it (fleetCannotProduce).
func checkDocumented(t *testing.T, s scrape) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range docRow.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = true
	}
	if len(documented) == 0 {
		t.Fatal("no | `flux_...` | rows in docs/metrics.md")
	}
	for name := range s.fams {
		if strings.HasPrefix(name, "flux_") && !documented[name] {
			t.Errorf("%s is scraped but not documented in docs/metrics.md", name)
		}
	}
	for name := range documented {
		_, scraped := s.fams[name]
		exempt := slices.Contains(fleetCannotProduce, name)
		switch {
		case !scraped && !exempt:
			t.Errorf("%s is documented but missing from the fleet scrape", name)
		case scraped && exempt:
			t.Errorf("%s is listed as impossible for the fleet but was scraped; remove it from fleetCannotProduce", name)
		}
	}
	for _, name := range fleetCannotProduce {
		if !documented[name] {
			t.Errorf("fleetCannotProduce lists %s, which docs/metrics.md does not document", name)
		}
	}
}
