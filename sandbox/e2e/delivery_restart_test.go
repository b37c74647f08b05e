package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// restartFamilies are the delivery families whose increase() must survive
// a restart, by what deliveryTotals keys them.
var restartFamilies = map[string]string{
	"flux_delivery_changes_total":           "flux_delivery_changes_total",
	"flux_delivery_failed_changes_total":    "flux_delivery_failed_changes_total",
	"flux_delivery_rollbacks_total":         "flux_delivery_rollbacks_total",
	"flux_delivery_lead_time_seconds":       "flux_delivery_lead_time_seconds_count",
	"flux_delivery_time_to_restore_seconds": "flux_delivery_time_to_restore_seconds_count",
}

// TestDeliveryRestart (issue 20, part B): on a churning fleet, a real
// Prometheus scrapes two exporters, one that keeps running and one that
// is restarted once most Kustomizations' status.history has rotated;
// churn pauses for the restart, then goes on. Over a window that spans
// the restart, Prometheus's increase() of every delivery counter of the
// restarted one must equal the steady one's: counting again what
// status.history held at its start would add up to five phantom changes
// per Kustomization, and missing changes would show as less.
func TestDeliveryRestart(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not on PATH (Debian's prometheus package; .ci/run installs it): %v", err)
	}
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(fleet.Options{Seed: 5, Objects: 80, Namespaces: 2, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	steady := startExporter(t, c.kubeconfig, defaultFamilies)
	fixed := freeAddress(t)
	restarting := startExporter(t, c.kubeconfig, defaultFamilies, "--web.listen-address="+fixed)
	steady.waitReady()
	restarting.waitReady()
	prom := startPrometheus(t, promBin, []string{hostOf(steady.url), fixed})
	waitScraped(t, prom, hostOf(steady.url))
	waitScraped(t, prom, fixed)
	begin := time.Now()

	start, err := readHistories(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	churned := churnInBackground(ctx, t, c, f, 17)
	waitForRotation(ctx, t, c, start)
	before := churned()
	quiesce(t, prom, steady, restarting)

	// Churn stands still for the restart, so the restarted exporter may
	// miss nothing: its increase must equal the steady one's.
	restarting.stop()
	restarted := startExporter(t, c.kubeconfig, defaultFamilies, "--web.listen-address="+fixed)
	restarted.waitReady()
	waitScraped(t, prom, fixed)
	if got := deliveryTotals(restarted.scrape()); got["flux_delivery_changes_total"] != 0 {
		t.Errorf("the restarted exporter counts what status.history held when it started: %v", got)
	}

	churned = churnInBackground(ctx, t, c, f, 23)
	time.Sleep(10 * time.Second)
	after := churned()
	quiesce(t, prom, steady, restarted)
	end := time.Now()
	window := fmt.Sprintf("%ds", int(math.Ceil(end.Sub(begin).Seconds()))+5)
	t.Logf("churn before the restart %+v, after %+v; the steady exporter counted %v", before, after, deliveryTotals(steady.scrape()))
	for fam, key := range restartFamilies {
		name := fam
		if key != fam {
			name = fam + "_count"
		}
		incr := func(instance string) float64 {
			t.Helper()
			res, err := prom.query(fmt.Sprintf(`sum(increase(%s{instance=%q}[%s]))`, name, instance, window), end)
			if err != nil || len(res) != 1 || res[0].Value == nil {
				t.Fatalf("increase of %s on %s: %v %v", name, instance, res, err)
			}
			return res[0].Value.v
		}
		a, b := incr(hostOf(steady.url)), incr(fixed)
		// increase() extrapolates each series by up to half a scrape
		// interval at either end of what it covers, in proportion: the
		// two exporters' series cover the window alike, within a scrape.
		slack := math.Max(1, 0.05*a)
		t.Logf("%s: steady %.2f, restarted %.2f", name, a, b)
		if math.Abs(a-b) > slack {
			t.Errorf("%s: over a window that spans the restart, the restarted exporter's increase is %.2f, the steady one's %.2f", name, b, a)
		}
		if key == "flux_delivery_changes_total" && a < 20 {
			t.Errorf("too little churn to tell: %.1f changes", a)
		}
	}
}

// quiesce waits until Prometheus has scraped the exporters after their
// last change: both scrapes agree twice in a row, two scrape intervals
// apart.
func quiesce(t *testing.T, p *prometheusServer, exporters ...*exporter) {
	t.Helper()
	last := ""
	eventually(t, 30*time.Second, func() error {
		now := ""
		for _, e := range exporters {
			now += fmt.Sprint(deliveryTotals(e.scrape()))
		}
		if now != last {
			last = now
			time.Sleep(2500 * time.Millisecond)
			return fmt.Errorf("delivery series still moving")
		}
		return nil
	})
	time.Sleep(2500 * time.Millisecond)
}

// churnInBackground churns the fleet until the returned function is
// called, which returns what churn did.
func churnInBackground(ctx context.Context, t *testing.T, c *cluster, f *fleet.Fleet, seed int64) func() fleet.ChurnStats {
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var stats fleet.ChurnStats
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		stats, err = fleet.Churn(ctx, c.srv.RESTConfig(), f, fleet.ChurnOptions{
			Interval: 50 * time.Millisecond, Seed: seed, ChangesPerTick: 4, Ticks: 6000,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil && ctx.Err() == nil {
			t.Errorf("churn: %v", err)
		}
	}()
	return func() fleet.ChurnStats {
		stop()
		wg.Wait()
		return stats
	}
}

// histories are the Kustomizations' status.history entries, by UID, as
// digest and firstReconciled.
type histories map[string]map[string]bool

func readHistories(ctx context.Context, c *cluster) (histories, error) {
	list, err := c.dyn.Resource(gvrs["Kustomization"]).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := histories{}
	for _, ks := range list.Items {
		entries := map[string]bool{}
		h, _, _ := unstructured.NestedSlice(ks.Object, "status", "history")
		for _, e := range h {
			m, _ := e.(map[string]any)
			entries[fmt.Sprint(m["digest"], "@", m["firstReconciled"])] = true
		}
		out[string(ks.GetUID())] = entries
	}
	return out, nil
}

// waitForRotation waits until most Kustomizations that were there at
// start have lost an entry of their status.history since: their counted
// changes are then more than the history holds, the case in which a
// restarted exporter that counts the history again shows Prometheus a
// counter reset and adds phantom changes.
func waitForRotation(ctx context.Context, t *testing.T, c *cluster, start histories) {
	t.Helper()
	eventually(t, 2*time.Minute, func() error {
		now, err := readHistories(ctx, c)
		if err != nil {
			return err
		}
		rotated, there := 0, 0
		for uid, was := range start {
			is, ok := now[uid]
			if !ok || len(was) == 0 {
				continue
			}
			there++
			for e := range was {
				if !is[e] {
					rotated++
					break
				}
			}
		}
		if rotated*2 < there || there == 0 {
			return fmt.Errorf("%d of %d Kustomizations lost a history entry since the exporters started", rotated, there)
		}
		return nil
	})
}

// waitScraped waits until Prometheus has scraped the target up again.
func waitScraped(t *testing.T, p *prometheusServer, target string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		res, err := p.query(fmt.Sprintf(`up{instance=%q} == 1`, target), time.Now())
		if err != nil || len(res) != 1 {
			return fmt.Errorf("%s not up in Prometheus yet: %v %v", target, res, err)
		}
		return nil
	})
}

// hostOf is an exporter URL's host:port, its instance label.
func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }
