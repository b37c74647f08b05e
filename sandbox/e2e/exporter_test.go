// Package e2e runs the real flux_exporter binary against a real in-process
// Kubernetes API server loaded with the real Flux CRDs.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

var update = flag.Bool("update", false, "rewrite golden files from the current output")

// exporterBin is the flux_exporter binary built once for the package, so the
// tests exercise the real main wiring, flags and exit codes.
var exporterBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	flag.Parse()
	dir, err := os.MkdirTemp("", "flux-exporter-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	exporterBin = filepath.Join(dir, "flux_exporter")
	build := exec.Command("go", "build", "-o", exporterBin, ".")
	build.Dir = filepath.Join("..", "..")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build flux_exporter:", err)
		return 1
	}
	code := m.Run()
	// The benchmark fleet's server outlives single benchmarks; stop it so
	// its etcd directory is removed.
	if benchFleet.c != nil {
		if err := benchFleet.c.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop benchmark API server:", err)
		}
	}
	return code
}

// syncBuffer is an io.Writer safe for the process's writer goroutine and
// the test reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type exporter struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *syncBuffer
	url  string
	// exited is closed once the process has been waited for; err and
	// cmd.ProcessState are safe to read after that.
	exited chan struct{}
	err    error
	// started is when the process was started: it counts the delivery
	// changes Flux records after it.
	started time.Time
}

// startExporter runs flux_exporter against the kubeconfig and waits until
// it listens. It is stopped with SIGTERM when the test ends. Every family
// is on, opt-in ones too, unless args set --metric-opt-in-list: the tests
// that judge what users get by default (the mixin proof, the timelines)
// pass defaultFamilies.
// defaultFamilies runs an exporter with the default family set.
const defaultFamilies = "--metric-opt-in-list="

func startExporter(t testing.TB, kubeconfig string, args ...string) *exporter {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--metric-opt-in-list") }) {
		args = append(args, "--metric-opt-in-list=.")
	}
	e := runExporter(t, append([]string{"--kube.config=" + kubeconfig, "--web.listen-address=127.0.0.1:0", "--log.format=json", "--log.level=debug"}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	for e.url == "" {
		select {
		case <-e.exited:
			t.Fatalf("flux_exporter exited early (%v):\n%s", e.err, e.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("flux_exporter did not listen within 30s:\n%s", e.logs)
		}
		sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
		for sc.Scan() {
			var line struct{ Msg, Address, Listener string }
			// The events webhook's own listener logs the same message.
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Listening on" && line.Listener == "" {
				e.url = "http://" + line.Address
			}
		}
	}
	t.Cleanup(func() { e.stop() })
	return e
}

// runExporter starts the binary with exactly these arguments.
func runExporter(t testing.TB, args ...string) *exporter {
	t.Helper()
	e := &exporter{t: t, logs: &syncBuffer{}, exited: make(chan struct{}), started: time.Now()}
	e.cmd = exec.Command(exporterBin, args...)
	e.cmd.Stdout, e.cmd.Stderr = e.logs, e.logs
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start flux_exporter: %v", err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.exited)
	}()
	return e
}

// wait returns the exit code, failing the test if it takes over limit.
func (e *exporter) wait(limit time.Duration) int {
	e.t.Helper()
	select {
	case <-e.exited:
		return e.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		_ = e.cmd.Process.Kill()
		e.t.Fatalf("flux_exporter still running after %s:\n%s", limit, e.logs)
		return -1
	}
}

func (e *exporter) stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
		// A graceful shutdown exits 0; a start-up failure a test provoked
		// on purpose has already been waited for and returned above.
		if code := e.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(e.logs.String(), "Shut down cleanly") {
			e.t.Errorf("flux_exporter did not shut down cleanly on SIGTERM (exit %d):\n%s", code, e.logs)
		}
	case <-time.After(15 * time.Second):
		_ = e.cmd.Process.Kill()
		e.t.Errorf("flux_exporter ignored SIGTERM for 15s:\n%s", e.logs)
	}
}

func (e *exporter) get(path string, header http.Header) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// waitReady polls /-/ready until it answers 200.
func (e *exporter) waitReady() {
	e.t.Helper()
	eventually(e.t, 30*time.Second, func() error {
		code, body := e.get("/-/ready", nil)
		if code != http.StatusOK {
			return fmt.Errorf("/-/ready answered %d: %s", code, body)
		}
		return nil
	})
}

// scrape fetches /metrics and parses it.
func (e *exporter) scrape() scrape {
	e.t.Helper()
	code, body := e.get("/metrics", nil)
	if code != http.StatusOK {
		e.t.Fatalf("/metrics answered %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return scrape{fams: fams, text: body}
}

type scrape struct {
	fams map[string]*dto.MetricFamily
	text string
}

// find returns the samples of a family whose labels include all of want.
func (s scrape) find(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	fam, ok := s.fams[name]
	if !ok {
		return nil
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// value is the single sample's value; ok is false when there is not
// exactly one match.
func (s scrape) value(name string, want map[string]string) (float64, bool) {
	ms := s.find(name, want)
	if len(ms) != 1 {
		return 0, false
	}
	m := ms[0]
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// eventually retries f until it returns nil or limit passes.
func eventually(t testing.TB, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cluster is one real API server with the Flux CRDs and a kubeconfig.
type cluster struct {
	srv        *apiserver.Server
	dyn        dynamic.Interface
	kubeconfig string
}

func newCluster(t testing.TB, mode apiserver.Mode) *cluster {
	t.Helper()
	return newClusterFrom(t, apiserver.StartT(t, apiserver.Options{Mode: mode}))
}

// newClusterFrom wraps a running server with clients and a kubeconfig.
func newClusterFrom(t testing.TB, srv *apiserver.Server) *cluster {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := srv.WriteKubeconfig(kc); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{srv: srv, dyn: dyn, kubeconfig: kc}
}

// gvrs of the Flux kinds the tests write, at the versions these CRDs serve.
var gvrs = map[string]schema.GroupVersionResource{
	"GitRepository":         {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"},
	"OCIRepository":         {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "ocirepositories"},
	"HelmRepository":        {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "helmrepositories"},
	"HelmChart":             {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "helmcharts"},
	"Bucket":                {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "buckets"},
	"ExternalArtifact":      {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "externalartifacts"},
	"Kustomization":         {Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"},
	"HelmRelease":           {Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"},
	"Alert":                 {Group: "notification.toolkit.fluxcd.io", Version: "v1beta3", Resource: "alerts"},
	"Provider":              {Group: "notification.toolkit.fluxcd.io", Version: "v1beta3", Resource: "providers"},
	"Receiver":              {Group: "notification.toolkit.fluxcd.io", Version: "v1", Resource: "receivers"},
	"ImageRepository":       {Group: "image.toolkit.fluxcd.io", Version: "v1", Resource: "imagerepositories"},
	"ImagePolicy":           {Group: "image.toolkit.fluxcd.io", Version: "v1", Resource: "imagepolicies"},
	"ImageUpdateAutomation": {Group: "image.toolkit.fluxcd.io", Version: "v1", Resource: "imageupdateautomations"},
	"ArtifactGenerator":     {Group: "source.extensions.fluxcd.io", Version: "v1beta1", Resource: "artifactgenerators"},
	"FluxInstance":          {Group: "fluxcd.controlplane.io", Version: "v1", Resource: "fluxinstances"},
	"ResourceSet":           {Group: "fluxcd.controlplane.io", Version: "v1", Resource: "resourcesets"},
	"FluxReport":            {Group: "fluxcd.controlplane.io", Version: "v1", Resource: "fluxreports"},
}

// apply creates the object from YAML, then writes its status through the
// status subresource as a Flux controller does. It returns the stored object.
func (c *cluster) apply(t testing.TB, manifest []byte) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(manifest, &u.Object); err != nil {
		t.Fatalf("decode manifest: %v", err)
	}
	gvr, ok := gvrs[u.GetKind()]
	if !ok {
		t.Fatalf("no GVR for kind %q", u.GetKind())
	}
	status, hasStatus := u.Object["status"]
	delete(u.Object, "status")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := c.dyn.Resource(gvr).Namespace(u.GetNamespace())
	created, err := res.Create(ctx, u, metaCreate)
	if err != nil {
		t.Fatalf("create %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if !hasStatus {
		return created
	}
	created.Object["status"] = status
	updated, err := res.UpdateStatus(ctx, created, metaUpdate)
	if err != nil {
		t.Fatalf("update status of %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return updated
}
