package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// TestBinaryLinksNoServer keeps the API server, etcd and the controller
// runtime out of the exporter binary: only tests and the sandbox use them.
func TestBinaryLinksNoServer(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", exporterBin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "k8s.io/client-go") {
		t.Fatalf("go version -m lists no client-go; is this the exporter?\n%s", out)
	}
	for _, banned := range []string{"go.etcd.io/etcd/server", "k8s.io/apiserver", "k8s.io/kubernetes", "k8s.io/apiextensions-apiserver", "sigs.k8s.io/controller-runtime"} {
		if strings.Contains(string(out), banned) {
			t.Errorf("flux_exporter links %s", banned)
		}
	}
}

// TestServesThroughAPIServerOutage stops the API server under a running
// exporter: it must keep serving the last known objects, count the failed
// watches, and not exit.
func TestServesThroughAPIServerOutage(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	c.apply(t, []byte(gitRepo))
	e := startExporter(t, c.kubeconfig)
	e.waitReady()
	id := map[string]string{"kind": "GitRepository", "name": "podinfo", "exported_namespace": "apps"}
	eventually(t, 10*time.Second, func() error {
		if _, ok := e.scrape().value("flux_resource_info", with(id, map[string]string{"ready": "True"})); !ok {
			return fmt.Errorf("object not reported yet")
		}
		return nil
	})

	if err := c.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		s := e.scrape()
		if v, _ := s.value("flux_exporter_watch_errors_total", map[string]string{"kind": "GitRepository"}); v < 1 {
			return fmt.Errorf("no watch error counted yet; exporter log:\n%s", lastLines(e.logs.String(), 15))
		}
		return nil
	})
	s := e.scrape()
	if _, ok := s.value("flux_resource_info", with(id, map[string]string{"ready": "True"})); !ok {
		t.Errorf("the cached object vanished during the outage:\n%s", grep(s.text, "flux_resource_info"))
	}
	if v, _ := s.value("flux_exporter_collector_success", map[string]string{"collector": "resources"}); v != 1 {
		t.Errorf("resources collector failed during the outage")
	}
	if code, _ := e.get("/-/healthy", nil); code != http.StatusOK {
		t.Errorf("/-/healthy answered %d during the outage", code)
	}
	select {
	case <-e.exited:
		t.Fatalf("flux_exporter exited during the outage (%v):\n%s", e.err, e.logs)
	default:
	}
}

// TestWebConfigBasicAuth serves through exporter-toolkit's web config.
func TestWebConfigBasicAuth(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	hash, err := bcrypt.GenerateFromPassword([]byte("flux-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfg, []byte("basic_auth_users:\n  prometheus: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, c.kubeconfig, "--web.config.file="+cfg)
	if code, _ := e.get("/metrics", nil); code != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials answered %d, want 401", code)
	}
	req, err := http.NewRequest(http.MethodGet, e.url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("prometheus", "flux-pass")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics with credentials answered %d, want 200", resp.StatusCode)
	}
}

// TestNamespaceFilters checks --namespaces and --namespaces-exclude, and
// that --web.disable-exporter-metrics drops the exporter's own metrics.
func TestNamespaceFilters(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		c.apply(t, []byte(strings.ReplaceAll(gitRepo, "namespace: apps", "namespace: "+ns)))
	}
	only := startExporter(t, c.kubeconfig, "--namespaces=team-a,team-c", "--web.disable-exporter-metrics")
	except := startExporter(t, c.kubeconfig, "--namespaces-exclude=team-a")
	only.waitReady()
	except.waitReady()
	for _, tc := range []struct {
		name string
		e    *exporter
		want map[string]bool
	}{
		{"--namespaces", only, map[string]bool{"team-a": true, "team-b": false, "team-c": true}},
		{"--namespaces-exclude", except, map[string]bool{"team-a": false, "team-b": true, "team-c": true}},
	} {
		eventually(t, 10*time.Second, func() error {
			s := tc.e.scrape()
			for ns, want := range tc.want {
				_, got := s.value("flux_resource_info", map[string]string{"kind": "GitRepository", "exported_namespace": ns})
				if got != want {
					return fmt.Errorf("%s: namespace %s reported %v, want %v", tc.name, ns, got, want)
				}
			}
			return nil
		})
	}
	if s := only.scrape(); strings.Contains(s.text, "\ngo_goroutines") || strings.Contains(s.text, "\nprocess_") {
		t.Error("--web.disable-exporter-metrics still serves go_* or process_* metrics")
	}
	if s := except.scrape(); !strings.Contains(s.text, "\ngo_goroutines") {
		t.Error("exporter metrics missing by default")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
