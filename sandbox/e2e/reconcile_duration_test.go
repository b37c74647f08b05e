package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// churnNamespace holds this test's objects alone: the stand-in managers of
// a test process share one registry, and series are keyed by namespace.
const churnNamespace = "churn"

// churnObjects are reconciled, then partly deleted; broken-gone fails and
// is retried until it goes, so its count moves between scrapes.
const churnObjects = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: keep, namespace: churn}
spec: {interval: 1m, url: "https://github.com/example/keep"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: gone-1, namespace: churn}
spec: {interval: 1m, url: "https://github.com/example/gone-1"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: gone-2, namespace: churn}
spec: {interval: 1m, url: "https://github.com/example/gone-2"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: broken-gone, namespace: churn}
spec: {interval: 1m, url: "https://example.invalid/broken-gone"}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: keep, namespace: churn}
spec: {interval: 10m, prune: true, path: ./keep, sourceRef: {kind: GitRepository, name: keep}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: gone, namespace: churn}
spec: {interval: 10m, prune: true, path: ./gone, sourceRef: {kind: GitRepository, name: keep}}
`

// TestReconcileDurationCounter runs a real controller-runtime manager as
// the stand-in for Flux's source and kustomize controllers, deletes and
// re-creates objects between scrapes so that their
// gotk_reconcile_duration_seconds series vanish from the pods' pages as
// Flux makes them vanish, and checks on every scrape of the real exporter
// binary that flux_controller_reconcile_duration_seconds never decreases
// and equals, per pod and kind, the live series of the page the exporter
// read plus the last values of the series gone since.
func TestReconcileDurationCounter(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{standin.Namespace, churnNamespace} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metaCreate); err != nil {
			t.Fatal(err)
		}
	}
	for _, doc := range strings.Split(churnObjects, "\n---\n") {
		c.apply(t, []byte(doc))
	}
	runManager(t, c.srv.RESTConfig(), gitRepositoryReconciler, kustomizationReconciler)
	source := serveEndpoint(t, standin.MetricsHandler(gitRepositoryReconciler))
	kustomize := serveEndpoint(t, standin.MetricsHandler(kustomizationReconciler))

	// Every object has its series before the exporter first looks.
	eventually(t, 30*time.Second, func() error {
		src, ks := source.scrapeSelf(t), kustomize.scrapeSelf(t)
		for _, o := range []struct {
			s          scrape
			kind, name string
			min        uint64
		}{
			{src, "GitRepository", "keep", 1}, {src, "GitRepository", "gone-1", 1}, {src, "GitRepository", "gone-2", 1},
			{src, "GitRepository", "broken-gone", 2}, {ks, "Kustomization", "keep", 1}, {ks, "Kustomization", "gone", 1},
		} {
			if n, _ := objectCount(o.s, o.kind, o.name); n < o.min {
				return fmt.Errorf("%s %s reconciled %d times, want at least %d", o.kind, o.name, n, o.min)
			}
		}
		return nil
	})

	cs := &controllers{t: t, kc: kc}
	cs.deploy("source-controller", standin.FluxVersion, "ghcr.io/fluxcd/source-controller:v1.7.3", 1)
	cs.deploy("kustomize-controller", standin.FluxVersion, "ghcr.io/fluxcd/kustomize-controller:v1.7.2", 1)
	cs.pod("source-controller", "source-controller-0", standin.FluxVersion, source.port, true)
	cs.pod("kustomize-controller", "kustomize-controller-0", standin.FluxVersion, kustomize.port, true)
	cs.status("source-controller", 1, 1, 1)
	cs.status("kustomize-controller", 1, 1, 1)
	e := startExporter(t, c.kubeconfig)
	e.waitReady()

	l := newDurationLedger(t, e, map[string]ledgerPod{
		"source-controller-0":    {"source-controller", source},
		"kustomize-controller-0": {"kustomize-controller", kustomize},
	})
	var before map[string]map[string][2]float64
	if !t.Run("counts the live objects", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			before = l.observe(t)
			for _, id := range [][2]string{{"source-controller-0", "GitRepository"}, {"kustomize-controller-0", "Kustomization"}} {
				if _, ok := before[id[0]][id[1]]; !ok {
					return fmt.Errorf("no %s reconcile duration of %s yet", id[1], id[0])
				}
			}
			return nil
		})
		for pod, kinds := range l.retained {
			for kind, r := range kinds {
				if r != ([2]float64{}) {
					t.Errorf("%s %s retains %v before any deletion", pod, kind, r)
				}
			}
		}
	}) {
		return
	}

	if !t.Run("keeps the totals of deleted objects", func(t *testing.T) {
		deleted := map[string][]string{"GitRepository": {"gone-1", "gone-2", "broken-gone"}, "Kustomization": {"gone"}}
		for kind, names := range deleted {
			for _, name := range names {
				deleteChurn(t, c, kind, name)
			}
		}
		// The manager has seen every deletion and dropped the series.
		eventually(t, 30*time.Second, func() error {
			src, ks := source.scrapeSelf(t), kustomize.scrapeSelf(t)
			for kind, names := range deleted {
				s := map[string]scrape{"GitRepository": src, "Kustomization": ks}[kind]
				for _, name := range names {
					if _, ok := objectCount(s, kind, name); ok {
						return fmt.Errorf("%s %s still has its series", kind, name)
					}
				}
			}
			return nil
		})
		after := l.observe(t)
		// The pages the exporter read lack the deleted objects' series, and
		// their own totals fell: what the exporter used to pass on.
		for _, id := range []struct{ pod, kind string }{{"source-controller-0", "GitRepository"}, {"kustomize-controller-0", "Kustomization"}} {
			served := l.last[id.pod]
			for _, name := range deleted[id.kind] {
				if _, ok := served[sourceSeriesKey(id.kind, name)]; ok {
					t.Errorf("%s served %s %s to the exporter after its deletion", id.pod, id.kind, name)
				}
			}
			live := liveTotal(served, id.kind)
			if live[0] >= before[id.pod][id.kind][0] {
				t.Errorf("%s's own %s count did not fall (%v, was %v): nothing was tested", id.pod, id.kind, live[0], before[id.pod][id.kind][0])
			}
			if got, r := after[id.pod][id.kind], l.retained[id.pod][id.kind]; got[0] <= live[0] || r[0] == 0 {
				t.Errorf("%s %s: exported %v over live %v, retained %v", id.pod, id.kind, got, live, r)
			}
		}
	}) {
		return
	}

	if !t.Run("counts both lives of a re-created object", func(t *testing.T) {
		// Reconciles of keep, which the exporter sees, so that the object
		// re-created under its name starts below them. One change at a
		// time: the work queue merges changes that arrive together.
		for i := range 3 {
			was, _ := objectCount(source.scrapeSelf(t), "GitRepository", "keep")
			touchChurn(t, c, "GitRepository", "keep", i)
			eventually(t, 30*time.Second, func() error {
				if n, _ := objectCount(source.scrapeSelf(t), "GitRepository", "keep"); n <= was {
					return fmt.Errorf("keep reconciled %d times, still", n)
				}
				return nil
			})
		}
		var seen float64
		eventually(t, 30*time.Second, func() error {
			l.observe(t)
			seen = l.last["source-controller-0"][sourceSeriesKey("GitRepository", "keep")].count
			if seen < 4 {
				return fmt.Errorf("the exporter saw keep reconciled %v times, want at least 4", seen)
			}
			return nil
		})
		deleteChurn(t, c, "GitRepository", "keep")
		eventually(t, 30*time.Second, func() error {
			if _, ok := objectCount(source.scrapeSelf(t), "GitRepository", "keep"); ok {
				return fmt.Errorf("keep still has its series")
			}
			return nil
		})
		c.apply(t, []byte(strings.Split(churnObjects, "\n---\n")[0]))
		eventually(t, 30*time.Second, func() error {
			if n, _ := objectCount(source.scrapeSelf(t), "GitRepository", "keep"); n == 0 {
				return fmt.Errorf("the new keep is not reconciled yet")
			}
			return nil
		})
		l.observe(t)
		// The exporter never saw keep missing: its count went back.
		if now := l.last["source-controller-0"][sourceSeriesKey("GitRepository", "keep")].count; now >= seen {
			t.Errorf("the new keep's count %v is not below the old one's %v: nothing was tested", now, seen)
		}
	}) {
		return
	}

	t.Run("starts a replaced pod from its own page", func(t *testing.T) {
		next := serveEndpoint(t, standin.MetricsHandler(gitRepositoryReconciler))
		l.pods["source-controller-1"] = ledgerPod{"source-controller", next}
		cs := &controllers{t: t, kc: kc}
		cs.pod("source-controller", "source-controller-1", standin.FluxVersion, next.port, true)
		cs.delete("source-controller-0")
		eventually(t, 30*time.Second, func() error {
			got := l.observe(t)
			if _, ok := got["source-controller-0"]; ok {
				return fmt.Errorf("source-controller-0 is still scraped")
			}
			if _, ok := got["source-controller-1"]["GitRepository"]; !ok {
				return fmt.Errorf("source-controller-1 is not scraped yet")
			}
			return nil
		})
		if r := l.retained["source-controller-1"]["GitRepository"]; r != ([2]float64{}) {
			t.Errorf("the new pod retains %v", r)
		}
	})
}

// ledgerPod is a controller pod whose pages the ledger follows.
type ledgerPod struct {
	controller string
	endpoint   *endpoint
}

// sourceSample is one source series' count and sum, with its kind.
type sourceSample struct {
	kind       string
	count, sum float64
}

// durationLedger follows, scrape by scrape, the pages each pod served to
// the exporter, and keeps the last values of each per-object series that
// vanished or went back: the exporter must export, per pod and kind, that
// retained total plus the page's live series, and never less than before.
// Every scrape of the exporter in the test goes through observe, so the
// ledger sees every page the exporter folded.
type durationLedger struct {
	e        *exporter
	pods     map[string]ledgerPod
	last     map[string]map[string]sourceSample
	retained map[string]map[string][2]float64
	exported map[string]map[string][2]float64
}

func newDurationLedger(t *testing.T, e *exporter, pods map[string]ledgerPod) *durationLedger {
	t.Helper()
	return &durationLedger{e: e, pods: pods, last: map[string]map[string]sourceSample{},
		retained: map[string]map[string][2]float64{}, exported: map[string]map[string][2]float64{}}
}

// observe scrapes the exporter once, folds the page each pod served to it
// into the ledger and checks the exported totals; it returns them by pod
// and kind.
func (l *durationLedger) observe(t *testing.T) map[string]map[string][2]float64 {
	t.Helper()
	s, _ := scrapeWithin(l.e, scrapeTimeout)
	out := map[string]map[string][2]float64{}
	for _, m := range s.find("flux_controller_reconcile_duration_seconds", nil) {
		lb := labels(m)
		if out[lb["pod"]] == nil {
			out[lb["pod"]] = map[string][2]float64{}
		}
		out[lb["pod"]][lb["kind"]] = [2]float64{float64(m.GetSummary().GetSampleCount()), m.GetSummary().GetSampleSum()}
	}
	for pod, p := range l.pods {
		if s.scraped(p.controller, pod, 1) != nil {
			// Not fetched, or failed: the exporter keeps its account as
			// it is, and so does the ledger.
			if len(out[pod]) != 0 {
				t.Errorf("%s was not scraped, yet has reconcile durations %v", pod, out[pod])
			}
			continue
		}
		page := servedDurations(t, p.endpoint.lastServed())
		if l.retained[pod] == nil {
			l.retained[pod] = map[string][2]float64{}
		}
		for key, was := range l.last[pod] {
			if now, ok := page[key]; !ok || now.count < was.count || now.sum < was.sum {
				r := l.retained[pod][was.kind]
				l.retained[pod][was.kind] = [2]float64{r[0] + was.count, r[1] + was.sum}
			}
		}
		l.last[pod] = page

		want := map[string][2]float64{}
		for kind, r := range l.retained[pod] {
			want[kind] = r
		}
		for _, smp := range page {
			w := want[smp.kind]
			want[smp.kind] = [2]float64{w[0] + smp.count, w[1] + smp.sum}
		}
		if len(out[pod]) != len(want) {
			t.Errorf("%s: exported kinds %v, want %v", pod, out[pod], want)
		}
		for kind, w := range want {
			got, ok := out[pod][kind]
			if !ok || got[0] != w[0] || !closeTo(got[1], w[1]) {
				t.Errorf("%s %s: exported count, sum %v, want retained %v + live = %v", pod, kind, got, l.retained[pod][kind], w)
			}
			if was, ok := l.exported[pod][kind]; ok && (got[0] < was[0] || got[1] < was[1]) {
				t.Errorf("%s %s: exported count, sum went down from %v to %v", pod, kind, was, got)
			}
		}
		l.exported[pod] = out[pod]
	}
	return out
}

// servedDurations reads the gotk_reconcile_duration_seconds series of a
// page, keyed as sourceSeriesKey keys them.
func servedDurations(t *testing.T, body []byte) map[string]sourceSample {
	t.Helper()
	if len(body) == 0 {
		t.Fatal("the endpoint has served nothing to the exporter")
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse what the endpoint served: %v", err)
	}
	out := map[string]sourceSample{}
	for _, m := range fams["gotk_reconcile_duration_seconds"].GetMetric() {
		lb := labels(m)
		h := m.GetHistogram()
		out[labelKey(lb)] = sourceSample{kind: lb["kind"], count: float64(h.GetSampleCount()), sum: h.GetSampleSum()}
	}
	return out
}

func sourceSeriesKey(kind, name string) string {
	return labelKey(map[string]string{"kind": kind, "name": name, "namespace": churnNamespace})
}

// liveTotal adds up a page's series of the kind.
func liveTotal(page map[string]sourceSample, kind string) [2]float64 {
	var t [2]float64
	for _, s := range page {
		if s.kind == kind {
			t = [2]float64{t[0] + s.count, t[1] + s.sum}
		}
	}
	return t
}

// objectCount is the reconcile count of a churn object on a page.
func objectCount(s scrape, kind, name string) (uint64, bool) {
	ms := s.find("gotk_reconcile_duration_seconds", map[string]string{"kind": kind, "name": name, "namespace": churnNamespace})
	if len(ms) != 1 {
		return 0, false
	}
	return ms[0].GetHistogram().GetSampleCount(), true
}

// deleteChurn deletes a churn object.
func deleteChurn(t *testing.T, c *cluster, kind, name string) {
	t.Helper()
	if err := c.dyn.Resource(gvrs[kind]).Namespace(churnNamespace).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete %s %s: %v", kind, name, err)
	}
}

// touchChurn changes a label of a churn object, which makes the manager
// reconcile it again.
func touchChurn(t *testing.T, c *cluster, kind, name string, n int) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{"touched":"%d"}}}`, n)
	if _, err := c.dyn.Resource(gvrs[kind]).Namespace(churnNamespace).Patch(t.Context(), name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch %s %s: %v", kind, name, err)
	}
}
