package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

var (
	gitRepositoryReconciler = standin.Reconciler{Name: "gitrepository",
		GVK: schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}}
	kustomizationReconciler = standin.Reconciler{Name: "kustomization",
		GVK: schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}}
)

// Objects the stand-in controllers reconcile; broken-repo fails every time,
// so that error and retry counters move.
const reconciledObjects = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: apps}
spec: {interval: 1m, url: "https://github.com/stefanprodan/podinfo", ref: {branch: master}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: broken-repo, namespace: apps}
spec: {interval: 1m, url: "https://example.invalid/broken"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: infra, namespace: infra}
spec: {interval: 5m, url: "https://github.com/example/infra", ref: {tag: v1.0.0}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: podinfo, namespace: apps}
spec: {interval: 10m, prune: true, path: ./kustomize, sourceRef: {kind: GitRepository, name: podinfo}}
`

// scrapeTimeout is announced on every scrape, as Prometheus does.
const scrapeTimeout = "5"

// TestControllers runs real controller-runtime managers as stand-ins for
// Flux controllers, publishes their Deployments and Pods on a full API
// server as Flux's install does, and checks what the real exporter binary
// makes of them: distribution metrics, the pods' own metrics re-exported,
// readiness, a rolling upgrade and pods that misbehave.
func TestControllers(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{standin.Namespace, "apps", "infra"} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metaCreate); err != nil {
			t.Fatal(err)
		}
	}
	for _, doc := range strings.Split(reconciledObjects, "\n---\n") {
		c.apply(t, []byte(doc))
	}
	runManager(t, c.srv.RESTConfig(), gitRepositoryReconciler, kustomizationReconciler)

	source := serveEndpoint(t, standin.MetricsHandler(gitRepositoryReconciler))
	kustomize := serveEndpoint(t, standin.MetricsHandler(kustomizationReconciler))
	// Until the broken repository has failed a few times, the counters
	// under test would be trivially zero.
	eventually(t, 30*time.Second, func() error {
		s := source.scrapeSelf(t)
		if v, _ := s.value("controller_runtime_reconcile_total", map[string]string{"controller": "gitrepository", "result": "error"}); v < 2 {
			return fmt.Errorf("gitrepository reconcile errors: %v, want at least 2", v)
		}
		if v, _ := s.value("controller_runtime_reconcile_total", map[string]string{"controller": "gitrepository", "result": "success"}); v < 2 {
			return fmt.Errorf("gitrepository reconcile successes: %v, want at least 2", v)
		}
		return nil
	})

	cs := &controllers{t: t, kc: kc}
	cs.deploy("source-controller", "v2.7.1", "ghcr.io/fluxcd/source-controller:v1.7.1", 1)
	cs.deploy("kustomize-controller", "v2.7.1", "ghcr.io/fluxcd/kustomize-controller:v1.7.0", 1)
	// Installed but scaled to zero: reported, never scraped.
	cs.deploy("helm-controller", "v2.7.1", "ghcr.io/fluxcd/helm-controller:v1.4.1", 0)
	cs.pod("source-controller", "source-controller-0", "v2.7.1", source.port, true)
	cs.pod("kustomize-controller", "kustomize-controller-0", "v2.7.1", kustomize.port, true)
	cs.status("source-controller", 1, 1, 1)
	cs.status("kustomize-controller", 1, 1, 1)

	t.Run("rejects a bad selector", func(t *testing.T) {
		bad := runExporter(t, "--kube.config="+c.kubeconfig, "--web.listen-address=127.0.0.1:0", "--flux.controllers-selector=app in (")
		if code := bad.wait(30 * time.Second); code != 2 {
			t.Fatalf("exit code %d, want 2:\n%s", code, bad.logs)
		}
		if !strings.Contains(bad.logs.String(), "--flux.controllers-selector") {
			t.Errorf("error does not name the flag:\n%s", bad.logs)
		}
	})

	e := startExporter(t, c.kubeconfig, "--controllers.timeout=20s")
	e.waitReady()

	// Phases build on each other: stop at the first that fails.
	if !t.Run("re-exports the pods' own values", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			if err := s.expectValues(map[string]map[string]float64{
				"flux_controller_replicas_desired": {"source-controller": 1, "kustomize-controller": 1, "helm-controller": 0},
				"flux_controller_replicas_ready":   {"source-controller": 1, "kustomize-controller": 1, "helm-controller": 0},
			}); err != nil {
				return err
			}
			for _, info := range []map[string]string{
				{"controller": "source-controller", "version": "v2.7.1", "image": "ghcr.io/fluxcd/source-controller:v1.7.1"},
				{"controller": "kustomize-controller", "version": "v2.7.1", "image": "ghcr.io/fluxcd/kustomize-controller:v1.7.0"},
				{"controller": "helm-controller", "version": "v2.7.1", "image": "ghcr.io/fluxcd/helm-controller:v1.4.1"},
			} {
				if v, ok := s.value("flux_controller_info", info); !ok || v != 1 {
					return fmt.Errorf("no flux_controller_info %v:\n%s", info, grep(s.text, "flux_controller_info"))
				}
			}
			if _, ok := s.value("flux_distribution_info", map[string]string{"version": "v2.7.1"}); !ok {
				return fmt.Errorf("distribution version not v2.7.1:\n%s", grep(s.text, "flux_distribution_info"))
			}
			for _, ep := range []struct {
				controller, pod string
				endpoint        *endpoint
			}{{"source-controller", "source-controller-0", source}, {"kustomize-controller", "kustomize-controller-0", kustomize}} {
				if err := s.scraped(ep.controller, ep.pod, 1); err != nil {
					return err
				}
				if err := compareReexport(s, ep.controller, ep.pod, ep.endpoint.lastServed()); err != nil {
					return err
				}
			}
			if n := len(s.find("flux_controller_scrape_success", map[string]string{"controller": "helm-controller"})); n != 0 {
				return fmt.Errorf("a controller without pods was scraped")
			}
			return nil
		})

		// The values are genuine: the reconciler's failures and retries,
		// the per-kind durations and the process figures all moved.
		s, _ := scrapeWithin(e, scrapeTimeout)
		src := map[string]string{"controller": "source-controller", "pod": "source-controller-0"}
		for _, check := range []struct {
			name   string
			labels map[string]string
			min    float64
		}{
			{"flux_controller_reconcile_total", with(src, map[string]string{"reconciler": "gitrepository", "result": "error"}), 2},
			{"flux_controller_reconcile_total", with(src, map[string]string{"reconciler": "gitrepository", "result": "success"}), 2},
			{"flux_controller_reconcile_errors_total", with(src, map[string]string{"reconciler": "gitrepository"}), 2},
			{"flux_controller_workqueue_retries_total", with(src, map[string]string{"name": "gitrepository"}), 2},
			{"flux_controller_max_concurrent_reconciles", with(src, map[string]string{"reconciler": "gitrepository"}), 1},
			{"flux_controller_goroutines", src, 10},
			{"flux_controller_resident_memory_bytes", src, 1 << 20},
			{"flux_controller_cpu_seconds_total", src, 0.01},
		} {
			if v, ok := s.value(check.name, check.labels); !ok || v < check.min {
				t.Errorf("%s%v = %v (found %v), want at least %v", check.name, check.labels, v, ok, check.min)
			}
		}
		count, _ := s.summary("flux_controller_reconcile_duration_seconds", with(src, map[string]string{"kind": "GitRepository"}))
		if count < 4 {
			t.Errorf("GitRepository reconcile duration count %d, want at least 4 (3 objects, one retried)", count)
		}
		if ms := s.find("flux_controller_reconcile_duration_seconds", map[string]string{"controller": "source-controller", "kind": "Kustomization"}); len(ms) != 0 {
			t.Errorf("source-controller's endpoint reported a Kustomization duration")
		}
		if ms := s.find("flux_controller_reconcile_duration_seconds", map[string]string{"name": "podinfo"}); len(ms) != 0 {
			t.Errorf("per-object labels survived the aggregation")
		}
	}) {
		return
	}

	if !t.Run("follows readiness and a rolling upgrade", func(t *testing.T) {
		cs := &controllers{t: t, kc: kc}
		// A second kustomize-controller replica, not ready yet: counted,
		// not scraped.
		cs.scale("kustomize-controller", 2)
		cs.pod("kustomize-controller", "kustomize-controller-1", "v2.7.1", kustomize.port, false)
		cs.status("kustomize-controller", 2, 2, 1)
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			if err := s.expectValues(map[string]map[string]float64{
				"flux_controller_replicas_desired": {"kustomize-controller": 2},
				"flux_controller_replicas_ready":   {"kustomize-controller": 1},
			}); err != nil {
				return err
			}
			if n := len(s.find("flux_controller_scrape_success", map[string]string{"pod": "kustomize-controller-1"})); n != 0 {
				return fmt.Errorf("the unready pod was scraped")
			}
			return s.scraped("kustomize-controller", "kustomize-controller-0", 1)
		})
		cs.ready("kustomize-controller-1", true)
		cs.status("kustomize-controller", 2, 2, 2)
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			if err := s.expectValues(map[string]map[string]float64{"flux_controller_replicas_ready": {"kustomize-controller": 2}}); err != nil {
				return err
			}
			return s.scraped("kustomize-controller", "kustomize-controller-1", 1)
		})

		// source-controller rolls to the next Flux release: the Deployment
		// changes first, a new pod comes up beside the old one, then the old
		// one goes.
		cs.upgrade("source-controller", "v2.7.2", "ghcr.io/fluxcd/source-controller:v1.7.2")
		cs.pod("source-controller", "source-controller-1", "v2.7.2", source.port, false)
		cs.status("source-controller", 2, 1, 1)
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			info := s.find("flux_controller_info", map[string]string{"controller": "source-controller"})
			if len(info) != 1 || labels(info[0])["version"] != "v2.7.2" || labels(info[0])["image"] != "ghcr.io/fluxcd/source-controller:v1.7.2" {
				return fmt.Errorf("source-controller info not upgraded:\n%s", grep(s.text, "flux_controller_info"))
			}
			// Two of three controllers still run v2.7.1.
			if _, ok := s.value("flux_distribution_info", map[string]string{"version": "v2.7.1"}); !ok {
				return fmt.Errorf("distribution version not the majority's v2.7.1:\n%s", grep(s.text, "flux_distribution_info"))
			}
			return s.expectValues(map[string]map[string]float64{"flux_controller_replicas_ready": {"source-controller": 1}})
		})
		cs.ready("source-controller-1", true)
		cs.delete("source-controller-0")
		cs.status("source-controller", 1, 1, 1)
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			if err := s.scraped("source-controller", "source-controller-1", 1); err != nil {
				return err
			}
			if n := len(s.find("flux_controller_scrape_success", map[string]string{"pod": "source-controller-0"})); n != 0 {
				return fmt.Errorf("the deleted pod is still scraped")
			}
			if n := len(s.find("flux_controller_goroutines", map[string]string{"pod": "source-controller-0"})); n != 0 {
				return fmt.Errorf("the deleted pod's series remain")
			}
			return compareReexport(s, "source-controller", "source-controller-1", source.lastServed())
		})

		// The CRDs' label is the distribution's own word and wins over the
		// controllers' vote.
		crd, err := c.dyn.Resource(crdGVR).Patch(ctx, "gitrepositories.source.toolkit.fluxcd.io", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"app.kubernetes.io/version":"v2.7.3"}}}`), metav1.PatchOptions{})
		if err != nil || crd.GetLabels()["app.kubernetes.io/version"] != "v2.7.3" {
			t.Fatalf("label the GitRepository CRD: %v", err)
		}
		eventually(t, 30*time.Second, func() error {
			s, _ := scrapeWithin(e, scrapeTimeout)
			if _, ok := s.value("flux_distribution_info", map[string]string{"version": "v2.7.3"}); !ok {
				return fmt.Errorf("distribution version not the CRD's v2.7.3:\n%s", grep(s.text, "flux_distribution_info"))
			}
			return nil
		})
	}) {
		return
	}

	if !t.Run("contains pods that misbehave", func(t *testing.T) {
		cs := &controllers{t: t, kc: kc}
		// Each bad pod also serves, before failing, lines that would be
		// re-exported: none of them may leak into the scrape.
		const leak = "go_goroutines 4242\nprocess_resident_memory_bytes 4242\n"
		bad := map[string]http.HandlerFunc{
			"garbage": func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				fmt.Fprint(w, leak+"this is { not the text format\n")
			},
			"html": func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprint(w, "<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>\n")
			},
			"status-500": func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, leak)
			},
			"truncated": func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				w.Header().Set("Content-Length", "100000")
				fmt.Fprint(w, leak)
				// Ending the handler early breaks the promised length:
				// the server closes the connection mid-body.
			},
			"huge": func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				fmt.Fprint(w, leak)
				line := []byte("# a valid comment line, repeated past the size cap ........................\n")
				for n := 0; n < 12<<20; n += len(line) {
					if _, err := w.Write(line); err != nil {
						return
					}
				}
			},
			"endless": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				for i := 0; i < 1<<30 && r.Context().Err() == nil; i++ {
					if _, err := fmt.Fprintf(w, "workqueue_depth{name=\"q%d\"} 1\n", i); err != nil {
						return
					}
				}
			},
			"slow": func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(time.Minute):
				}
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				fmt.Fprint(w, leak)
			},
		}
		cs.deploy("notification-controller", "v2.7.1", "ghcr.io/fluxcd/notification-controller:v1.7.1", int32(len(bad)+1))
		pods := map[string]int32{"notification-controller-dead": deadPort(t)}
		for name, h := range bad {
			pods["notification-controller-"+name] = serveEndpoint(t, h).port
		}
		for pod, port := range pods {
			cs.pod("notification-controller", pod, "v2.7.1", port, true)
		}
		cs.status("notification-controller", int32(len(pods)), int32(len(pods)), int32(len(pods)))

		eventually(t, 60*time.Second, func() error {
			s, took := scrapeWithin(e, "3")
			// The announced 3 s less the 0.5 s offset bound the slow pod, not
			// the 20 s --controllers.timeout; the margin is generous.
			if took > 6*time.Second {
				t.Fatalf("scrape with a 3s deadline took %s", took)
			}
			for pod := range pods {
				if err := s.scraped("notification-controller", pod, 0); err != nil {
					return err
				}
			}
			for _, good := range [][2]string{{"source-controller", "source-controller-1"}, {"kustomize-controller", "kustomize-controller-0"}, {"kustomize-controller", "kustomize-controller-1"}} {
				if err := s.scraped(good[0], good[1], 1); err != nil {
					return err
				}
				if _, ok := s.value("flux_controller_goroutines", map[string]string{"controller": good[0], "pod": good[1]}); !ok {
					return fmt.Errorf("%s lost its metrics beside the bad pods", good[1])
				}
			}
			if strings.Contains(s.text, "4242") || len(s.find("flux_controller_workqueue_depth", map[string]string{"controller": "notification-controller"})) != 0 {
				return fmt.Errorf("a failed pod's metrics leaked:\n%s", grep(s.text, "notification-controller"))
			}
			for _, coll := range []string{"resources", "controllers"} {
				if v, _ := s.value("flux_exporter_collector_success", map[string]string{"collector": coll}); v != 1 {
					return fmt.Errorf("collector %s success %v, want 1", coll, v)
				}
			}
			if _, ok := s.value("flux_resource_info", map[string]string{"kind": "GitRepository", "name": "podinfo", "exported_namespace": "apps"}); !ok {
				return fmt.Errorf("resource metrics missing beside the bad pods")
			}
			return nil
		})

		// --controllers.timeout caps a scraper's longer deadline.
		capped := startExporter(t, c.kubeconfig, "--controllers.timeout=1s")
		capped.waitReady()
		eventually(t, 30*time.Second, func() error {
			s, took := scrapeWithin(capped, "60")
			if took > 4*time.Second {
				t.Fatalf("scrape with a 1s --controllers.timeout took %s", took)
			}
			if err := s.scraped("notification-controller", "notification-controller-slow", 0); err != nil {
				return err
			}
			return s.scraped("source-controller", "source-controller-1", 1)
		})
	}) {
		return
	}

	t.Run("needs read access to the controllers", func(t *testing.T) {
		needsRBAC(t, c, kc)
	})
}

// runManager runs the stand-in manager until the test ends.
func runManager(t *testing.T, cfg *rest.Config, reconcilers ...standin.Reconciler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, err := standin.RunManager(ctx, cfg, reconcilers...)
	if err != nil {
		cancel()
		t.Fatalf("start controller-runtime manager: %v", err)
	}
	// Registered after newCluster's cleanup, so it runs before the API
	// server stops.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller-runtime manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("controller-runtime manager did not stop within 30s")
		}
	})
}

// endpoint is a controller pod's metrics port on 127.0.0.1. It keeps the
// last body it served to the exporter, so that the test compares against
// exactly what the exporter read: process and Go figures change between
// any two scrapes.
type endpoint struct {
	port    int32
	mu      sync.Mutex
	last    []byte
	gzipped bool
}

func serveEndpoint(t *testing.T, h http.Handler) *endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := &endpoint{port: int32(ln.Addr().(*net.TCPAddr).Port)}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.UserAgent(), "flux_exporter/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		// Stored before the handler returns, so before the exporter can
		// have read the end of the body.
		ep.mu.Lock()
		ep.last, ep.gzipped = rec.body.Bytes(), w.Header().Get("Content-Encoding") == "gzip"
		ep.mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ep
}

// lastServed is the body last served to the exporter, uncompressed:
// promhttp gzips for clients that accept it, as Go's transport does.
func (ep *endpoint) lastServed() []byte {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if !ep.gzipped || len(ep.last) == 0 {
		return ep.last
	}
	zr, err := gzip.NewReader(bytes.NewReader(ep.last))
	if err != nil {
		return nil
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	return body
}

// scrapeSelf reads the endpoint as any client would.
func (ep *endpoint) scrapeSelf(t testing.TB) scrape {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(int(ep.port)) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return parseScrape(t, buf.Bytes())
}

type teeWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

// deadPort is a port on 127.0.0.1 that nothing listens on any more.
func deadPort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return int32(port)
}

func parseScrape(t testing.TB, body []byte) scrape {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, body)
	}
	return scrape{fams: fams, text: string(body)}
}

// scrapeWithin scrapes the exporter as Prometheus does, announcing its
// timeout, and says how long the answer took.
func scrapeWithin(e *exporter, timeoutSeconds string) (scrape, time.Duration) {
	e.t.Helper()
	start := time.Now()
	code, body := e.get("/metrics", http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {timeoutSeconds}})
	took := time.Since(start)
	if code != http.StatusOK {
		e.t.Fatalf("/metrics answered %d: %s", code, body)
	}
	return parseScrape(e.t, []byte(body)), took
}

// scraped checks the pod's scrape_success.
func (s scrape) scraped(controller, pod string, want float64) error {
	id := map[string]string{"controller": controller, "pod": pod}
	v, ok := s.value("flux_controller_scrape_success", id)
	if !ok || v != want {
		return fmt.Errorf("scrape_success %v = %v (found %v), want %v:\n%s", id, v, ok, want, grep(s.text, "flux_controller_scrape_success"))
	}
	if _, ok := s.value("flux_controller_scrape_duration_seconds", id); !ok {
		return fmt.Errorf("no scrape_duration_seconds for %v", id)
	}
	return nil
}

// expectValues checks per-controller gauges: family -> controller -> value.
func (s scrape) expectValues(want map[string]map[string]float64) error {
	for name, byController := range want {
		for controller, v := range byController {
			if got, ok := s.value(name, map[string]string{"controller": controller}); !ok || got != v {
				return fmt.Errorf("%s{controller=%q} = %v (found %v), want %v", name, controller, got, ok, v)
			}
		}
	}
	return nil
}

func (s scrape) summary(name string, want map[string]string) (uint64, float64) {
	ms := s.find(name, want)
	if len(ms) != 1 || ms[0].Summary == nil {
		return 0, 0
	}
	return ms[0].GetSummary().GetSampleCount(), ms[0].GetSummary().GetSampleSum()
}

// reexports is the specification of the re-exported families: the
// exported name, the source family, and exported label -> source label.
// Series whose exported labels coincide are added up.
var reexports = []struct {
	name, source string
	labels       map[string]string
}{
	{"flux_controller_workqueue_depth", "workqueue_depth", map[string]string{"name": "name"}},
	{"flux_controller_workqueue_longest_running_processor_seconds", "workqueue_longest_running_processor_seconds", map[string]string{"name": "name"}},
	{"flux_controller_workqueue_retries_total", "workqueue_retries_total", map[string]string{"name": "name"}},
	{"flux_controller_reconcile_total", "controller_runtime_reconcile_total", map[string]string{"reconciler": "controller", "result": "result"}},
	{"flux_controller_reconcile_errors_total", "controller_runtime_reconcile_errors_total", map[string]string{"reconciler": "controller"}},
	{"flux_controller_active_workers", "controller_runtime_active_workers", map[string]string{"reconciler": "controller"}},
	{"flux_controller_max_concurrent_reconciles", "controller_runtime_max_concurrent_reconciles", map[string]string{"reconciler": "controller"}},
	{"flux_controller_cpu_seconds_total", "process_cpu_seconds_total", nil},
	{"flux_controller_resident_memory_bytes", "process_resident_memory_bytes", nil},
	{"flux_controller_goroutines", "go_goroutines", nil},
}

// compareReexport checks every re-exported series of the pod against the
// body the pod served for that scrape, in both directions.
func compareReexport(s scrape, controller, pod string, served []byte) error {
	if len(served) == 0 {
		return fmt.Errorf("%s has served nothing to the exporter yet", pod)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(served))
	if err != nil {
		return fmt.Errorf("parse what %s served: %w", pod, err)
	}
	id := map[string]string{"controller": controller, "pod": pod}
	for _, r := range reexports {
		want := map[string]float64{}
		for _, m := range fams[r.source].GetMetric() {
			src := labels(m)
			out := map[string]string{}
			for exported, source := range r.labels {
				out[exported] = src[source]
			}
			want[labelKey(out)] += sampleValue(m)
		}
		if len(want) == 0 {
			return fmt.Errorf("%s served no %s: the stand-in is not a real controller-runtime manager", pod, r.source)
		}
		got := map[string]float64{}
		for _, m := range s.find(r.name, id) {
			l := labels(m)
			delete(l, "controller")
			delete(l, "pod")
			got[labelKey(l)] = sampleValue(m)
		}
		if err := sameValues(r.name, got, want); err != nil {
			return fmt.Errorf("%s of %s: %w", r.name, pod, err)
		}
	}

	want := map[string][2]float64{}
	for _, m := range fams["gotk_reconcile_duration_seconds"].GetMetric() {
		k := labels(m)["kind"]
		want[k] = [2]float64{want[k][0] + float64(m.GetHistogram().GetSampleCount()), want[k][1] + m.GetHistogram().GetSampleSum()}
	}
	if len(want) == 0 {
		return fmt.Errorf("%s served no gotk_reconcile_duration_seconds", pod)
	}
	got := map[string][2]float64{}
	for _, m := range s.find("flux_controller_reconcile_duration_seconds", id) {
		got[labels(m)["kind"]] = [2]float64{float64(m.GetSummary().GetSampleCount()), m.GetSummary().GetSampleSum()}
	}
	if len(got) != len(want) {
		return fmt.Errorf("reconcile durations of %s: got kinds %v, want %v", pod, got, want)
	}
	for k, w := range want {
		if g := got[k]; g[0] != w[0] || !closeTo(g[1], w[1]) {
			return fmt.Errorf("reconcile duration of %s %s: count, sum %v, want %v", pod, k, g, w)
		}
	}
	return nil
}

func sameValues(name string, got, want map[string]float64) error {
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok || !closeTo(g, w) {
			diffs = append(diffs, fmt.Sprintf("{%s}: got %v (present %v), want %v", k, g, ok, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("{%s}: got %v, not served", k, g))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("%s differs from the endpoint:\n%s", name, strings.Join(diffs, "\n"))
	}
	return nil
}

// closeTo allows for the order in which sums were added.
func closeTo(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k, v := range l {
		keys = append(keys, k+"="+strconv.Quote(v))
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

// controllers publishes stand-in Deployments and Pods in flux-system.
type controllers struct {
	t  *testing.T
	kc kubernetes.Interface
}

func (cs *controllers) deploy(controller, version, image string, replicas int32) {
	cs.t.Helper()
	ctx := cs.t.Context()
	if _, err := cs.kc.CoreV1().ServiceAccounts(standin.Namespace).Create(ctx, standin.ServiceAccount(controller), metaCreate); err != nil {
		cs.t.Fatal(err)
	}
	if _, err := cs.kc.AppsV1().Deployments(standin.Namespace).Create(ctx, standin.Deployment(controller, version, image, replicas), metaCreate); err != nil {
		cs.t.Fatal(err)
	}
}

func (cs *controllers) pod(controller, name, version string, port int32, ready bool) {
	cs.t.Helper()
	image := "ghcr.io/fluxcd/" + controller + ":" + version
	if _, err := cs.kc.CoreV1().Pods(standin.Namespace).Create(cs.t.Context(), standin.Pod(controller, name, version, image, port), metaCreate); err != nil {
		cs.t.Fatal(err)
	}
	cs.ready(name, ready)
}

func (cs *controllers) ready(pod string, ready bool) {
	cs.t.Helper()
	if err := standin.SetPodStatus(cs.t.Context(), cs.kc, pod, ready); err != nil {
		cs.t.Fatal(err)
	}
}

func (cs *controllers) status(controller string, replicas, updated, ready int32) {
	cs.t.Helper()
	if err := standin.SetDeploymentStatus(cs.t.Context(), cs.kc, controller, replicas, updated, ready); err != nil {
		cs.t.Fatal(err)
	}
}

func (cs *controllers) delete(pod string) {
	cs.t.Helper()
	if err := cs.kc.CoreV1().Pods(standin.Namespace).Delete(cs.t.Context(), pod, metav1.DeleteOptions{}); err != nil {
		cs.t.Fatal(err)
	}
}

func (cs *controllers) scale(controller string, replicas int32) {
	cs.t.Helper()
	cs.patchDeployment(controller, fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
}

// upgrade changes the version label and image as a Flux upgrade does.
func (cs *controllers) upgrade(controller, version, image string) {
	cs.t.Helper()
	labels := fmt.Sprintf(`{"app.kubernetes.io/version":%q}`, version)
	cs.patchDeployment(controller, fmt.Sprintf(`{"metadata":{"labels":%s},"spec":{"template":{"metadata":{"labels":%s},"spec":{"containers":[{"name":"manager","image":%q}]}}}}`,
		labels, labels, image))
}

func (cs *controllers) patchDeployment(controller, patch string) {
	cs.t.Helper()
	if _, err := cs.kc.AppsV1().Deployments(standin.Namespace).Patch(cs.t.Context(), controller, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		cs.t.Fatalf("patch deployment %s: %v", controller, err)
	}
}

// needsRBAC runs the exporter as a ServiceAccount: with read access to the
// Flux objects only, it refuses to start and names what to grant; with a
// Role for the controllers' Deployments and Pods, it serves them.
func needsRBAC(t *testing.T, c *cluster, kc kubernetes.Interface) {
	ctx := t.Context()
	read := []string{"get", "list", "watch"}
	clusterRole := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "flux-exporter"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: read},
		{APIGroups: []string{"source.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io",
			"notification.toolkit.fluxcd.io", "image.toolkit.fluxcd.io", "source.extensions.fluxcd.io"}, Resources: []string{"*"}, Verbs: read},
	}}
	if _, err := kc.RbacV1().ClusterRoles().Create(ctx, clusterRole, metaCreate); err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "monitoring", Name: "flux-exporter"}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "flux-exporter"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "flux-exporter"}}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, binding, metaCreate); err != nil {
		t.Fatal(err)
	}
	saConfig, err := c.srv.ServiceAccountConfig(ctx, "monitoring", "flux-exporter")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(saConfig)
	if err != nil {
		t.Fatal(err)
	}
	saDynamic, err := dynamic.NewForConfig(saConfig)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeTokenKubeconfig(t, saConfig)
	// RBAC changes reach the authorizer through its informers: wait until
	// the account sees what the binding grants before judging the exporter.
	eventually(t, 30*time.Second, func() error {
		_, err := saDynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})

	denied := runExporter(t, "--kube.config="+kubeconfig, "--web.listen-address=127.0.0.1:0")
	if code := denied.wait(30 * time.Second); code != 1 {
		t.Fatalf("exit code %d without access to the controllers, want 1:\n%s", code, denied.logs)
	}
	for _, want := range []string{"grant list and watch on deployments in namespace flux-system", "--no-collector.controllers"} {
		if !strings.Contains(denied.logs.String(), want) {
			t.Errorf("start-up error does not say %q:\n%s", want, denied.logs)
		}
	}
	// Without the collector, the same account is enough.
	startExporter(t, kubeconfig, "--no-collector.controllers").waitReady()

	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: standin.Namespace, Name: "flux-exporter"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
	}}
	if _, err := kc.RbacV1().Roles(standin.Namespace).Create(ctx, role, metaCreate); err != nil {
		t.Fatal(err)
	}
	roleBinding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: standin.Namespace, Name: "flux-exporter"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "flux-exporter"}}
	if _, err := kc.RbacV1().RoleBindings(standin.Namespace).Create(ctx, roleBinding, metaCreate); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		list := metav1.ListOptions{Limit: 1}
		if _, err := sa.AppsV1().Deployments(standin.Namespace).List(ctx, list); err != nil {
			return err
		}
		_, err := sa.CoreV1().Pods(standin.Namespace).List(ctx, list)
		return err
	})
	e := startExporter(t, kubeconfig)
	e.waitReady()
	eventually(t, 30*time.Second, func() error {
		s, _ := scrapeWithin(e, scrapeTimeout)
		return s.scraped("source-controller", "source-controller-1", 1)
	})
}

// writeTokenKubeconfig writes a kubeconfig for a bearer-token client
// configuration, as a Pod's ServiceAccount would use.
func writeTokenKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: "sa"}
	kc.CurrentContext = "sa"
	path := filepath.Join(t.TempDir(), "kubeconfig-sa")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
