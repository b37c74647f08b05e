package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

const kubectl = "/usr/bin/kubectl"

// syncBuffer collects output written by the sandbox goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.objects != 200 || c.namespaces != 5 || c.churnInterval != 3*time.Second || c.mode != "full" || c.listen != "127.0.0.1:16443" {
		t.Errorf("defaults: %+v", c)
	}
	for _, args := range [][]string{
		{"--listen", "0.0.0.0:16443"},
		{"--listen", "localhost:16443"},
		{"--listen", "127.0.0.1"},
		{"--listen", "127.0.0.1:99999"},
		{"--mode", "kind"},
		{"--objects", "0"},
		{"--churn-interval", "-1s"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"--listen", "0.0.0.0:1"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "only host 127.0.0.1") {
		t.Errorf("run with a public listen address: exit %d, stderr %q", code, stderr.String())
	}
}

// TestSandbox runs the command in each mode until it is ready, lists the
// fleet with kubectl through the kubeconfig it wrote, checks what the mode
// serves besides, then stops it and checks it left nothing behind.
func TestSandbox(t *testing.T) {
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl is needed at %s (install kubectl v1.32): %v", kubectl, err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, ctx context.Context, kubeconfig, usage string)
	}{
		{"full by default", nil, checkControllers},
		{"crd", []string{"--mode", "crd"}, func(t *testing.T, _ context.Context, _, usage string) {
			if !strings.Contains(usage, "CRD mode: no Deployments or Pods") {
				t.Errorf("usage does not say that CRD mode has no controllers:\n%s", usage)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSandbox(t, tc.args, tc.check)
		})
	}
}

func runSandbox(t *testing.T, args []string, check func(t *testing.T, ctx context.Context, kubeconfig, usage string)) {
	// Everything the sandbox puts in the temporary directory lands here.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	out := t.TempDir()
	kubeconfig := filepath.Join(out, "kubeconfig")
	ready := filepath.Join(out, "ready")

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	var code int
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		code = run(ctx, append([]string{
			"--objects", "60", "--namespaces", "3", "--seed", "9", "--churn-interval", "200ms",
			"--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfig, "--ready-file", ready,
		}, args...), &stdout, &stderr)
	}()
	// However the test ends, the server stops before its directories go.
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Error("sandbox still running 60s after cancel")
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("sandbox exited with %d before it was ready\nstderr:\n%s", code, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 2 minutes\nstderr:\n%s", stderr.String())
		}
	}
	if b, err := os.ReadFile(ready); err != nil || strings.TrimSpace(string(b)) != kubeconfig {
		t.Errorf("ready file holds %q (%v), want the kubeconfig path", b, err)
	}
	for _, want := range []string{kubeconfig, "kubectl --kubeconfig " + kubeconfig + " get gitrepositories,kustomizations,helmreleases -A"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage does not mention %q:\n%s", want, stdout.String())
		}
	}

	checkListing(t, runKubectl(t, ctx, kubeconfig, "get", "gitrepositories,kustomizations,helmreleases", "-A"))
	checkCRDLabels(t, ctx, kubeconfig)
	check(t, ctx, kubeconfig, stdout.String())

	cancel()
	select {
	case <-exited:
		if code != 0 {
			t.Errorf("sandbox exited with %d\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sandbox did not stop within 60s of cancel")
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in TMPDIR: %s", e.Name())
	}
	for _, p := range []string{kubeconfig, ready} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after exit (%v)", p, err)
		}
	}
}

func runKubectl(t *testing.T, ctx context.Context, kubeconfig string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // keep kubectl's cache out of TMPDIR and $HOME
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func restConfig(t *testing.T, kubeconfig string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("read the kubeconfig: %v", err)
	}
	return cfg
}

// checkCRDLabels expects Flux's version on the CRDs, where the exporter
// reads the distribution's version.
func checkCRDLabels(t *testing.T, ctx context.Context, kubeconfig string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(restConfig(t, kubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, name := range []string{"gitrepositories.source.toolkit.fluxcd.io", "helmreleases.helm.toolkit.fluxcd.io", "imagepolicies.image.toolkit.fluxcd.io"} {
		crd, err := dyn.Resource(crds).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get CRD %s: %v", name, err)
		}
		if got := crd.GetLabels()["app.kubernetes.io/version"]; got != standin.FluxVersion {
			t.Errorf("CRD %s has version label %q, want %q", name, got, standin.FluxVersion)
		}
	}
}

// checkControllers expects each stand-in Flux controller published as
// Flux's install does, ready, and its pod's metrics port serving its own
// controller-runtime metrics, which cover every object of its kinds on the
// server: the reconciles are real.
func checkControllers(t *testing.T, ctx context.Context, kubeconfig, usage string) {
	cfg := restConfig(t, kubeconfig)
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))

	selector := metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=flux"}
	deployments, err := kc.AppsV1().Deployments(standin.Namespace).List(ctx, selector)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := kc.CoreV1().Pods(standin.Namespace).List(ctx, selector)
	if err != nil {
		t.Fatal(err)
	}
	controllers := standin.FluxControllers()
	if len(deployments.Items) != len(controllers) || len(pods.Items) != len(controllers) {
		t.Fatalf("%d Deployments and %d Pods labelled part-of=flux in %s, want %d of each",
			len(deployments.Items), len(pods.Items), standin.Namespace, len(controllers))
	}
	deploymentTable := runKubectl(t, ctx, kubeconfig, "-n", standin.Namespace, "get", "deployments")
	for _, c := range controllers {
		t.Run(c.Name, func(t *testing.T) {
			i := slices.IndexFunc(deployments.Items, func(d appsv1.Deployment) bool { return d.Name == c.Name })
			if i < 0 {
				t.Fatalf("no Deployment %s", c.Name)
			}
			d := deployments.Items[i]
			wantLabels := map[string]string{"app": c.Name, "app.kubernetes.io/component": c.Name, "app.kubernetes.io/version": standin.FluxVersion}
			for k, v := range wantLabels {
				if d.Labels[k] != v {
					t.Errorf("Deployment label %s=%q, want %q", k, d.Labels[k], v)
				}
			}
			if d.Status.ReadyReplicas != 1 || d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				t.Errorf("Deployment status %+v, want 1 of 1 replicas ready", d.Status)
			}
			if !regexp.MustCompile(`(?m)^` + c.Name + `\s+1/1\s`).MatchString(deploymentTable) {
				t.Errorf("kubectl does not show %s 1/1 ready:\n%s", c.Name, deploymentTable)
			}

			i = slices.IndexFunc(pods.Items, func(p corev1.Pod) bool { return p.Labels["app"] == c.Name })
			if i < 0 {
				t.Fatalf("no Pod labelled app=%s", c.Name)
			}
			pod := pods.Items[i]
			ready := slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			})
			if pod.Status.Phase != corev1.PodRunning || !ready || pod.Status.PodIP != standin.PodIP {
				t.Errorf("Pod %s: phase %s, ready %v, IP %q; want Running, Ready on %s", pod.Name, pod.Status.Phase, ready, pod.Status.PodIP, standin.PodIP)
			}
			var port int32
			for _, p := range pod.Spec.Containers[0].Ports {
				if p.Name == "http-prom" {
					port = p.ContainerPort
				}
			}
			url := fmt.Sprintf("http://%s:%d/metrics", pod.Status.PodIP, port)
			if !strings.Contains(usage, url) {
				t.Errorf("usage does not show %s:\n%s", url, usage)
			}

			// Eventually every object of the controller's kinds has been
			// reconciled; churn keeps adding some.
			var last error
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
				if last = checkEndpoint(ctx, dyn, mapper, url, c); last == nil {
					break
				}
			}
			if last != nil {
				t.Errorf("metrics of %s after 30s: %v", pod.Name, last)
			}
		})
	}
}

// checkEndpoint scrapes a stand-in pod and compares its reconciles with
// the objects on the server.
func checkEndpoint(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, url string, c standin.Controller) error {
	objects := map[string][]string{} // kind -> namespace/name
	for _, r := range c.Reconcilers {
		m, err := mapper.RESTMapping(r.GVK.GroupKind(), r.GVK.Version)
		if err != nil {
			return err
		}
		list, err := dyn.Resource(m.Resource).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", r.GVK.Kind, err)
		}
		for _, o := range list.Items {
			objects[r.GVK.Kind] = append(objects[r.GVK.Kind], o.GetNamespace()+"/"+o.GetName())
		}
	}
	if len(objects) == 0 {
		return fmt.Errorf("the server has no objects of %s's kinds", c.Name)
	}

	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return fmt.Errorf("parse %s: %w", url, err)
	}
	series := func(family, label string) []string {
		var out []string
		for _, m := range fams[family].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out = append(out, l.GetValue())
				}
			}
		}
		return out
	}
	var names []string
	for _, r := range c.Reconcilers {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	for _, f := range []struct{ family, label string }{
		{"workqueue_depth", "name"},
		{"controller_runtime_reconcile_total", "controller"},
	} {
		if got := slices.Compact(slices.Sorted(slices.Values(series(f.family, f.label)))); !slices.Equal(got, names) {
			return fmt.Errorf("%s for %s %v, want %v", f.family, f.label, got, names)
		}
	}
	reconciled := map[string]bool{}
	for _, m := range fams["gotk_reconcile_duration_seconds"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		reconciled[l["kind"]+" "+l["namespace"]+"/"+l["name"]] = m.GetHistogram().GetSampleCount() > 0
	}
	for kind, objs := range objects {
		for _, o := range objs {
			if !reconciled[kind+" "+o] {
				return fmt.Errorf("%s %s not reconciled yet", kind, o)
			}
		}
	}
	return nil
}

// checkListing reads kubectl's tables (one per kind) by their header
// columns and expects the Ready and Status columns filled for the objects a
// controller has reconciled.
func checkListing(t *testing.T, listing string) {
	t.Helper()
	kinds := map[string]int{}
	var rows, filled int
	var readyAt, statusAt int
	for _, line := range strings.Split(listing, "\n") {
		if strings.HasPrefix(line, "NAMESPACE") {
			readyAt, statusAt = strings.Index(line, "READY"), strings.Index(line, "STATUS")
			if readyAt < 0 || statusAt < readyAt {
				t.Fatalf("header without READY and STATUS: %q", line)
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		kind := fields[1][:strings.Index(fields[1], "/")]
		kinds[kind]++
		rows++
		if len(line) <= statusAt {
			continue // never reconciled: both columns empty
		}
		ready := strings.TrimSpace(line[readyAt:statusAt])
		status := strings.TrimSpace(line[statusAt:])
		switch ready {
		case "":
			if status != "" {
				t.Errorf("Status without Ready: %q", line)
			}
		case "True", "False", "Unknown":
			if status == "" {
				t.Errorf("Ready %s without a Status message: %q", ready, line)
			}
			filled++
		default:
			t.Errorf("unexpected Ready column %q in %q", ready, line)
		}
	}
	for _, k := range []string{"gitrepository.source.toolkit.fluxcd.io", "kustomization.kustomize.toolkit.fluxcd.io", "helmrelease.helm.toolkit.fluxcd.io"} {
		if kinds[k] == 0 {
			t.Errorf("kubectl listed no %s:\n%s", k, listing)
		}
	}
	if rows == 0 || filled*10 < rows*8 {
		t.Errorf("%d of %d rows have Ready and Status filled, want at least 80%%:\n%s", filled, rows, listing)
	}
}

// TestChurnLogQuiet: churn's info lines are dropped unless asked for, and
// its warnings always show.
func TestChurnLogQuiet(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantInfo bool
	}{
		{nil, false},
		{[]string{"--churn-log"}, true},
		{[]string{"--verbose"}, true},
	} {
		cfg, err := parseFlags(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		logger := churnLogger(cfg, slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
		logger.With("tick", 1).Info("churn", "action", "bump-revision")
		logger.Warn("churn action failed", "err", "boom")
		if got := strings.Contains(out.String(), "bump-revision"); got != tc.wantInfo {
			t.Errorf("%v: churn action logged %v, want %v:\n%s", tc.args, got, tc.wantInfo, out.String())
		}
		if !strings.Contains(out.String(), "churn action failed") {
			t.Errorf("%v: a churn warning was dropped:\n%s", tc.args, out.String())
		}
	}
}
