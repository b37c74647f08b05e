package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/crds"
)

// Strict validation makes a typo in a test manifest an error instead of a
// silently pruned field.
var (
	metaCreate = metav1.CreateOptions{FieldValidation: "Strict"}
	metaUpdate = metav1.UpdateOptions{FieldValidation: "Strict"}
)

const gitRepo = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: apps}
spec:
  interval: 5m
  url: https://github.com/stefanprodan/podinfo
  ref: {branch: master}
status:
  observedGeneration: 1
  conditions:
  - {type: Ready, status: "True", reason: Succeeded, message: "stored artifact for revision 'master@sha1:3f5d'", lastTransitionTime: "2026-11-20T10:00:00Z", observedGeneration: 1}
  - {type: ArtifactInStorage, status: "True", reason: Succeeded, message: stored, lastTransitionTime: "2026-11-20T10:00:00Z", observedGeneration: 1}
  artifact:
    path: gitrepository/apps/podinfo/3f5d.tar.gz
    url: http://source-controller.flux-system.svc.cluster.local./gitrepository/apps/podinfo/3f5d.tar.gz
    revision: master@sha1:3f5d2d7bc9f6d5b6a4f1c6d3f0e9b8a7c6d5e4f3
    digest: sha256:9d6c0a3b4e8f7a6d5c4b3a29180f7e6d5c4b3a2918070f6e5d4c3b2a1908f7e6
    size: 81920
    lastUpdateTime: "2026-11-20T10:00:00Z"
`

// TestScrapeFollowsTheAPIServer creates, updates and deletes objects on a
// real API server and checks that each change shows on the next scrape.
func TestScrapeFollowsTheAPIServer(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	e := startExporter(t, c.kubeconfig)
	e.waitReady()

	// Every Flux kind of the real CRDs is discovered at its served version.
	s := e.scrape()
	for kind, gvr := range gvrs {
		if kind == "ArtifactGenerator" {
			continue // not a CRD this cluster has
		}
		if _, ok := s.value("flux_exporter_kind_info", map[string]string{"kind": kind, "group": gvr.Group, "version": gvr.Version, "resource": gvr.Resource}); !ok {
			t.Errorf("no flux_exporter_kind_info for %s %s", kind, gvr)
		}
		if v, _ := s.value("flux_exporter_kind_synced", map[string]string{"group": gvr.Group, "kind": kind}); v != 1 {
			t.Errorf("kind %s not synced", kind)
		}
	}

	obj := c.apply(t, []byte(gitRepo))
	id := map[string]string{"kind": "GitRepository", "name": "podinfo", "exported_namespace": "apps"}
	eventually(t, 10*time.Second, func() error {
		s := e.scrape()
		want := with(id, map[string]string{"uid": string(obj.GetUID()), "ready": "True", "reason": "Succeeded", "suspended": "False",
			"revision": "master@sha1:3f5d2d7bc9f6d5b6a4f1c6d3f0e9b8a7c6d5e4f3", "source_name": "", "ref": "master",
			"url": "https://github.com/stefanprodan/podinfo", "path": ""})
		if _, ok := s.value("flux_resource_info", want); !ok {
			return fmt.Errorf("no flux_resource_info %v in:\n%s", want, grep(s.text, "flux_resource_info"))
		}
		if v, _ := s.value("flux_source_artifact_size_bytes", id); v != 81920 {
			return fmt.Errorf("artifact size %v, want 81920", v)
		}
		if v, _ := s.value("flux_resource_interval_seconds", id); v != 300 {
			return fmt.Errorf("interval %v, want 300", v)
		}
		return nil
	})

	// A status update through the subresource, as source-controller writes it.
	ctx := context.Background()
	res := c.dyn.Resource(gvrs["GitRepository"]).Namespace("apps")
	cur, err := res.Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
	conds[0] = map[string]any{"type": "Ready", "status": "False", "reason": "GitOperationFailed",
		"message": "failed to checkout", "lastTransitionTime": "2026-11-21T08:00:00Z", "observedGeneration": int64(1)}
	if err := unstructured.SetNestedSlice(cur.Object, conds, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.UpdateStatus(ctx, cur, metaUpdate); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		s := e.scrape()
		if _, ok := s.value("flux_resource_condition", with(id, map[string]string{"type": "Ready", "status": "False", "reason": "GitOperationFailed"})); !ok {
			return fmt.Errorf("Ready=False not reported:\n%s", grep(s.text, "flux_resource_condition{"))
		}
		if v, _ := s.value("flux_resource_condition_last_transition_timestamp_seconds", with(id, map[string]string{"type": "Ready"})); v != 1795248000 {
			return fmt.Errorf("last transition %v, want 1795248000", v)
		}
		if len(s.find("flux_resource_condition", with(id, map[string]string{"type": "Ready", "status": "True"}))) != 0 {
			return fmt.Errorf("stale Ready=True series still exported")
		}
		return nil
	})

	// A spec change bumps the generation; the controller has not seen it.
	cur, err = res.Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(cur.Object, true, "spec", "suspend"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Update(ctx, cur, metaUpdate); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		s := e.scrape()
		gen, _ := s.value("flux_resource_generation", id)
		obs, _ := s.value("flux_resource_observed_generation", id)
		sus, _ := s.value("flux_resource_suspended", id)
		if gen != 2 || obs != 1 || sus != 1 {
			return fmt.Errorf("generation %v observed %v suspended %v, want 2 1 1", gen, obs, sus)
		}
		return nil
	})

	// Deleted objects' series disappear on the next scrape.
	if err := res.Delete(ctx, "podinfo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		s := e.scrape()
		if strings.Contains(s.text, `name="podinfo"`) {
			return fmt.Errorf("series of the deleted object remain:\n%s", grep(s.text, `name="podinfo"`))
		}
		if v, _ := s.value("flux_exporter_kind_objects", map[string]string{"group": "source.toolkit.fluxcd.io", "kind": "GitRepository"}); v != 0 {
			return fmt.Errorf("kind_objects %v, want 0", v)
		}
		return nil
	})
}

// TestKindsFollowTheirCRDs installs a Flux kind after start, then removes it.
func TestKindsFollowTheirCRDs(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	e := startExporter(t, c.kubeconfig)
	e.waitReady()
	if strings.Contains(e.scrape().text, `kind="ArtifactGenerator"`) {
		t.Fatal("ArtifactGenerator reported before its CRD exists")
	}

	crd, err := os.ReadFile(filepath.Join("testdata", "crds", "artifactgenerator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.srv.InstallCRDs(t.Context(), crd); err != nil {
		t.Fatal(err)
	}
	c.apply(t, []byte(`
apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {name: bundle, namespace: apps}
spec:
  interval: 10m
  sourceRef: {name: monorepo}
status:
  observedGeneration: 1
  conditions:
  - {type: Ready, status: "True", reason: Succeeded, message: ok, lastTransitionTime: "2026-11-20T10:00:00Z"}
`))
	id := map[string]string{"kind": "ArtifactGenerator", "name": "bundle", "exported_namespace": "apps"}
	eventually(t, 15*time.Second, func() error {
		s := e.scrape()
		if _, ok := s.value("flux_exporter_kind_info", map[string]string{"kind": "ArtifactGenerator", "version": "v1beta1", "group": "source.extensions.fluxcd.io"}); !ok {
			return fmt.Errorf("new kind not discovered:\n%s", grep(s.text, "flux_exporter_kind_info"))
		}
		if _, ok := s.value("flux_resource_info", with(id, map[string]string{"ready": "True", "source_name": "monorepo"})); !ok {
			return fmt.Errorf("object of the new kind not reported:\n%s", grep(s.text, "flux_resource_info"))
		}
		return nil
	})

	if err := deleteCRD(c, "artifactgenerators.source.extensions.fluxcd.io"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		s := e.scrape()
		if strings.Contains(s.text, `kind="ArtifactGenerator"`) {
			return fmt.Errorf("series of the removed kind remain:\n%s", grep(s.text, `kind="ArtifactGenerator"`))
		}
		return nil
	})
	if code, body := e.get("/-/ready", nil); code != http.StatusOK {
		t.Fatalf("not ready after a CRD was removed: %d %s", code, body)
	}
}

// TestReadsThePreferredVersion loads an Alert CRD that serves v1beta3 and
// v1, as newer Flux does, and expects the exporter to read v1.
func TestReadsThePreferredVersion(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	c.apply(t, []byte(`
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: on-call, namespace: flux-system}
spec:
  providerRef: {name: slack}
  eventSources: [{kind: Kustomization, name: "*"}]
`))
	if err := c.srv.InstallCRDs(t.Context(), alertServingV1(t)); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, c.kubeconfig)
	e.waitReady()
	s := e.scrape()
	if _, ok := s.value("flux_exporter_kind_info", map[string]string{"kind": "Alert", "version": "v1"}); !ok {
		t.Fatalf("Alert not read at v1:\n%s", grep(s.text, "flux_exporter_kind_info"))
	}
	// Alert has no status; flux get prints it as Ready, and so does the
	// exporter, without making up a condition (docs/flux-semantics.md,
	// rule 1).
	if _, ok := s.value("flux_resource_info", map[string]string{"kind": "Alert", "name": "on-call", "ready": "True"}); !ok {
		t.Fatalf("Alert not reported with ready=True:\n%s", grep(s.text, "flux_resource_info"))
	}
	if c := s.find("flux_resource_condition", map[string]string{"kind": "Alert"}); len(c) != 0 {
		t.Errorf("the Alert has no conditions, the exporter reports %d", len(c))
	}
}

// alertServingV1 is the real Alert CRD with its v1beta3 schema also served
// as v1 (not stored), which is how newer Flux releases serve it.
func alertServingV1(t testing.TB) []byte {
	t.Helper()
	all, err := crds.Flux()
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range all {
		var crd map[string]any
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatal(err)
		}
		if name, _, _ := unstructured.NestedString(crd, "metadata", "name"); name != "alerts.notification.toolkit.fluxcd.io" {
			continue
		}
		versions, _, _ := unstructured.NestedSlice(crd, "spec", "versions")
		for _, v := range versions {
			m := v.(map[string]any)
			if m["name"] == "v1beta3" {
				v1 := runtimeDeepCopy(m)
				v1["name"], v1["storage"], v1["deprecated"] = "v1", false, false
				delete(v1, "deprecationWarning")
				versions = append(versions, v1)
				break
			}
		}
		if err := unstructured.SetNestedSlice(crd, versions, "spec", "versions"); err != nil {
			t.Fatal(err)
		}
		out, err := yaml.Marshal(crd)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Fatal("Alert CRD not found among the Flux CRDs")
	return nil
}

func runtimeDeepCopy(m map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: m}).DeepCopy().Object
}

// TestStartupErrors checks the one-line errors and exit codes of bad input.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("this: [is not a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := filepath.Join(dir, "unreachable")
	if err := os.WriteFile(unreachable, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"missing kubeconfig", []string{"--kube.config=" + filepath.Join(dir, "nope")}, 1, []string{"--kube.config", "no such file"}},
		{"broken kubeconfig", []string{"--kube.config=" + broken}, 1, []string{"--kube.config", broken}},
		{"unreachable server", []string{"--kube.config=" + unreachable, "--kube.startup-timeout=2s"}, 1, []string{"--kube.startup-timeout", "127.0.0.1:1", "attempt=2"}},
		{"unknown flag", []string{"--no-such-flag"}, 2, []string{"no-such-flag", "--help"}},
		{"bad duration", []string{"--kube.startup-timeout=soon"}, 2, []string{"kube.startup-timeout"}},
		{"conflicting namespaces", []string{"--kube.config=" + unreachable, "--namespaces=a,b", "--namespaces-exclude=a", "--kube.startup-timeout=1s"}, 2, []string{`"a"`, "--namespaces-exclude"}},
		{"empty API group", []string{"--kube.config=" + unreachable, "--flux.api-groups=source.toolkit.fluxcd.io,,fluxcd.controlplane.io"}, 2, []string{"--flux.api-groups", "entry 2 is empty"}},
		{"invalid API group", []string{"--kube.config=" + unreachable, "--flux.api-groups=Source"}, 2, []string{"--flux.api-groups", `"Source" is not an API group`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := runExporter(t, append([]string{"--web.listen-address=127.0.0.1:0"}, tc.args...)...)
			if code := e.wait(30 * time.Second); code != tc.code {
				t.Fatalf("exit code %d, want %d:\n%s", code, tc.code, e.logs)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.logs.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, e.logs)
				}
			}
			// A bad flag is one line that says what to fix.
			if tc.code == 2 && strings.Count(strings.TrimSpace(e.logs.String()), "\n") != 0 {
				t.Errorf("a bad flag gave more than one line:\n%s", e.logs)
			}
		})
	}
}

func deleteCRD(c *cluster, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.dyn.Resource(crdGVR).Delete(ctx, name, metav1.DeleteOptions{})
}

func with(base map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// grep keeps the lines of an exposition that contain s, for failure output.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
