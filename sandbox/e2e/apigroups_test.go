package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// operatorGroup is the Flux Operator's API group, which does not end in
// .fluxcd.io; sandbox/crds/operator serves its FluxInstance.
const operatorGroup = "fluxcd.controlplane.io"

// The harness installs the FluxInstance CRD with the Flux CRDs, so every
// test that reads gvrs (the RBAC of TestInstall and the mixin's restricted
// replica among them) covers it.
const fluxInstance = `
apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata: {name: flux, namespace: flux-system}
spec:
  distribution: {version: "2.x", registry: ghcr.io/fluxcd}
  components: [source-controller, kustomize-controller, helm-controller, notification-controller]
status:
  conditions:
  - {type: Ready, status: "True", reason: ReconciliationSucceeded, message: "Reconciliation finished in 41s", lastTransitionTime: "2026-11-20T10:00:00Z", observedGeneration: 1}
  lastAppliedRevision: v2.7.3@sha256:1b4c9a8e3f0d2c7b6a5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0987
  lastAttemptedRevision: v2.7.3@sha256:1b4c9a8e3f0d2c7b6a5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0987
  components:
  - {name: source-controller, repository: ghcr.io/fluxcd/source-controller, tag: v1.7.3}
  inventory:
    entries:
    - {id: flux-system_source-controller_apps_Deployment, v: v1}
`

// TestAPIGroupsDecideDiscovery: the FluxInstance of fluxcd.controlplane.io
// is discovered and reported by default, and --flux.api-groups alone decides
// which groups are watched.
func TestAPIGroupsDecideDiscovery(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	c.apply(t, []byte(gitRepo))
	c.apply(t, []byte(fluxInstance))
	all := startExporter(t, c.kubeconfig)
	sourceOnly := startExporter(t, c.kubeconfig, "--flux.api-groups=source.toolkit.fluxcd.io")
	all.waitReady()
	sourceOnly.waitReady()

	id := map[string]string{"kind": "FluxInstance", "exported_namespace": "flux-system", "name": "flux"}
	eventually(t, 10*time.Second, func() error {
		s := all.scrape()
		if _, ok := s.value("flux_exporter_kind_info", map[string]string{"group": operatorGroup, "version": "v1", "kind": "FluxInstance", "resource": "fluxinstances"}); !ok {
			return fmt.Errorf("FluxInstance not discovered:\n%s", grep(s.text, "flux_exporter_kind_info"))
		}
		want := with(id, map[string]string{"ready": "True", "reason": "ReconciliationSucceeded", "suspended": "False",
			"revision": "v2.7.3@sha256:1b4c9a8e3f0d2c7b6a5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0987"})
		if _, ok := s.value("flux_resource_info", want); !ok {
			return fmt.Errorf("no flux_resource_info %v:\n%s", want, grep(s.text, `kind="FluxInstance"`))
		}
		if v, _ := s.value("flux_exporter_kind_objects", map[string]string{"group": operatorGroup, "kind": "FluxInstance"}); v != 1 {
			return fmt.Errorf("flux_exporter_kind_objects of FluxInstance %v, want 1", v)
		}
		return nil
	})

	s := sourceOnly.scrape()
	for _, m := range s.find("flux_exporter_kind_info", nil) {
		if g := labels(m)["group"]; g != "source.toolkit.fluxcd.io" {
			t.Errorf("--flux.api-groups=source.toolkit.fluxcd.io also watches %s %s", labels(m)["kind"], g)
		}
	}
	if _, ok := s.value("flux_resource_info", map[string]string{"kind": "GitRepository", "name": "podinfo"}); !ok {
		t.Errorf("--flux.api-groups=source.toolkit.fluxcd.io does not report the GitRepository:\n%s", grep(s.text, "flux_resource_info"))
	}
}

// TestForbiddenKindDoesNotHoldReadiness runs the exporter as a
// ServiceAccount that may read the CRDs and every default group but the
// Flux Operator's, as when a user narrows the ClusterRole. The exporter
// becomes ready, reports the kind unsynced and forbidden with no objects,
// says once what to grant however often client-go retries, and picks the
// kind up without a restart once the grant is made.
func TestForbiddenKindDoesNotHoldReadiness(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	ctx := t.Context()
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"flux-system", "apps"} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metaCreate); err != nil {
			t.Fatal(err)
		}
	}
	c.apply(t, []byte(gitRepo))
	c.apply(t, []byte(fluxInstance))

	var allowed []string
	for _, g := range kube.DefaultAPIGroups {
		if g != operatorGroup {
			allowed = append(allowed, g)
		}
	}
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "no-operator"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: read},
		{APIGroups: allowed, Resources: []string{"*"}, Verbs: read},
	}}
	if _, err := kc.RbacV1().ClusterRoles().Create(ctx, role, metaCreate); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "no-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "monitoring", Name: "exporter"}},
	}, metaCreate); err != nil {
		t.Fatal(err)
	}
	sa, err := c.srv.ServiceAccountConfig(ctx, "monitoring", "exporter")
	if err != nil {
		t.Fatal(err)
	}
	saDyn, err := dynamic.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	// The authorizer learns of the binding through its informers.
	eventually(t, 30*time.Second, func() error {
		_, err := saDyn.Resource(gvrs["GitRepository"]).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})

	e := startExporter(t, writeTokenKubeconfig(t, sa), "--no-collector.controllers")
	e.waitReady()
	fi := map[string]string{"group": operatorGroup, "kind": "FluxInstance"}
	// Ready, and the refusals keep coming: client-go retries with backoff.
	eventually(t, 30*time.Second, func() error {
		if v, _ := e.scrape().value("flux_exporter_watch_errors_total", fi); v < 4 {
			return fmt.Errorf("%v refused requests counted so far", v)
		}
		return nil
	})
	s := e.scrape()
	for name, want := range map[string]float64{
		"flux_exporter_kind_synced": 0, "flux_exporter_kind_forbidden": 1, "flux_exporter_kind_objects": 0,
	} {
		if v, ok := s.value(name, fi); !ok || v != want {
			t.Errorf("%s of FluxInstance = %v (found %v), want %v", name, v, ok, want)
		}
	}
	gr := map[string]string{"group": "source.toolkit.fluxcd.io", "kind": "GitRepository"}
	if v, _ := s.value("flux_exporter_kind_synced", gr); v != 1 {
		t.Errorf("GitRepository not synced:\n%s", grep(s.text, "flux_exporter_kind_synced"))
	}
	if v, _ := s.value("flux_exporter_kind_forbidden", gr); v != 0 {
		t.Errorf("GitRepository reported forbidden")
	}
	if n := len(s.find("flux_resource_info", map[string]string{"kind": "FluxInstance"})); n != 0 {
		t.Errorf("a forbidden kind reports %d objects", n)
	}
	if code, body := e.get("/-/ready", nil); code != http.StatusOK {
		t.Errorf("/-/ready answered %d %q with only a forbidden kind unsynced", code, body)
	}
	// Each kind of the forbidden group (FluxInstance, FluxReport,
	// ResourceSet, as the sandbox serves them) is logged once, however
	// often client-go retries.
	lines := logLines(e, "Forbidden to list and watch a Flux kind")
	perKind := map[string]int{}
	var fiLine string
	for _, l := range lines {
		if !strings.Contains(l, `"group":"fluxcd.controlplane.io"`) {
			t.Errorf("a kind outside the forbidden group was logged as forbidden:\n%s", l)
		}
		_, kind, _ := strings.Cut(l, `"kind":"`)
		kind, _, _ = strings.Cut(kind, `"`)
		perKind[kind]++
		if kind == "FluxInstance" {
			fiLine = l
		}
	}
	for kind, n := range perKind {
		if n != 1 {
			t.Errorf("the forbidden kind %s was logged %d times, want once:\n%s", kind, n, strings.Join(lines, "\n"))
		}
	}
	for _, want := range []string{`"kind":"FluxInstance"`, "grant get, list, watch on fluxcd.controlplane.io/fluxinstances"} {
		if !strings.Contains(fiLine, want) {
			t.Errorf("the FluxInstance log line lacks %s:\n%s", want, strings.Join(lines, "\n"))
		}
	}

	// The grant arrives: the kind syncs on client-go's next retry, which
	// its backoff (up to 30s) delays.
	role.Rules[1].APIGroups = kube.DefaultAPIGroups
	if _, err := kc.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		s := e.scrape()
		synced, _ := s.value("flux_exporter_kind_synced", fi)
		forbidden, _ := s.value("flux_exporter_kind_forbidden", fi)
		if synced != 1 || forbidden != 0 {
			return fmt.Errorf("after the grant, FluxInstance synced %v, forbidden %v", synced, forbidden)
		}
		if _, ok := s.value("flux_resource_info", map[string]string{"kind": "FluxInstance", "name": "flux", "ready": "True"}); !ok {
			return fmt.Errorf("the FluxInstance is not reported after the grant")
		}
		return nil
	})
	if n := len(logLines(e, "Forbidden to list and watch a Flux kind")); n != len(perKind) {
		t.Errorf("the %d Forbidden kinds were logged %d times in all, want once each", len(perKind), n)
	}
}

// TestNamespacesListedTwice: a namespace given twice is watched once, so
// each of its objects is reported once (a second informer would make every
// series a duplicate and fail the scrape).
func TestNamespacesListedTwice(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	c.apply(t, []byte(gitRepo))
	e := startExporter(t, c.kubeconfig, "--namespaces=apps,apps", "--namespaces-exclude=other,other")
	e.waitReady()
	eventually(t, 10*time.Second, func() error {
		s := e.scrape()
		if n := len(s.find("flux_resource_info", map[string]string{"kind": "GitRepository", "exported_namespace": "apps", "name": "podinfo"})); n != 1 {
			return fmt.Errorf("%d flux_resource_info series for apps/podinfo, want 1:\n%s", n, grep(s.text, "flux_resource_info"))
		}
		if v, _ := s.value("flux_exporter_kind_objects", map[string]string{"kind": "GitRepository"}); v != 1 {
			return fmt.Errorf("flux_exporter_kind_objects of GitRepository %v, want 1", v)
		}
		if v, _ := s.value("flux_exporter_collector_success", map[string]string{"collector": "resources"}); v != 1 {
			return fmt.Errorf("resources collector failed")
		}
		return nil
	})
}

// logLines are the exporter's JSON log lines whose message starts with msg.
func logLines(e *exporter, msg string) []string {
	var out []string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(l), &rec) == nil && strings.HasPrefix(rec.Msg, msg) {
			out = append(out, l)
		}
	}
	return out
}
