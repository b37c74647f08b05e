package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/crds/monitoring"
	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// The install paths under test, relative to this package.
var (
	repoRoot     = filepath.Join("..", "..")
	chartDir     = filepath.Join(repoRoot, "charts", "flux-exporter")
	allOnValues  = filepath.Join(chartDir, "ci", "all-on-values.yaml")
	deployDir    = filepath.Join(repoRoot, "deploy")
	rulesFile    = filepath.Join(repoRoot, "alerts", "flux-exporter.rules.yaml")
	dashboardDir = filepath.Join(repoRoot, "dashboards")
)

// components are the kustomize components under deploy/components.
var components = []string{"servicemonitor", "prometheusrule", "dashboards", "networkpolicy", "events", "webconfig"}

// fluxGroups are the API groups whose kinds flux_exporter discovers by
// default: the default of --flux.api-groups, the one list both installs
// must grant, no more and no less.
var fluxGroups = kube.DefaultAPIGroups

// grant is one permission: verb on group/resource, cluster-wide when
// namespace is empty.
type grant struct{ namespace, group, resource, verb string }

func (g grant) String() string {
	where := "cluster-wide"
	if g.namespace != "" {
		where = "in " + g.namespace
	}
	return fmt.Sprintf("%s %s/%s %s", g.verb, g.group, g.resource, where)
}

// neededGrants is everything flux_exporter needs, and so everything an
// install may grant it: reading the Flux objects and the CRDs that announce
// their kinds, and the controllers' Deployments and Pods in the Flux
// namespace; with autosharding (--pod, podNamespace not empty), reading its
// own Pod and watching its StatefulSet in podNamespace; and listing and
// watching Events, for notification-controller's NotificationDispatchFailed
// (package dispatch; on by default). Adding a rule to an
// install without adding it here fails TestInstall.
func neededGrants(fluxNamespace, podNamespace string) map[grant]bool {
	out := map[grant]bool{}
	for _, verb := range []string{"get", "list", "watch"} {
		for _, g := range fluxGroups {
			out[grant{"", g, "*", verb}] = true
		}
		out[grant{"", "apiextensions.k8s.io", "customresourcedefinitions", verb}] = true
		out[grant{fluxNamespace, "apps", "deployments", verb}] = true
		out[grant{fluxNamespace, "", "pods", verb}] = true
		if podNamespace != "" {
			// kube.PodSharding: Resolve gets the StatefulSet, Watch lists
			// and watches it.
			out[grant{podNamespace, "apps", "statefulsets", verb}] = true
		}
	}
	if podNamespace != "" {
		out[grant{podNamespace, "", "pods", "get"}] = true // its own pod, by name
	}
	out[grant{"", "", "events", "list"}] = true
	out[grant{"", "", "events", "watch"}] = true
	return out
}

// workloadOf is the install's one Deployment, or its StatefulSet when it
// shards.
func workloadOf(t *testing.T, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	found := append(ofKind(objs, "Deployment"), ofKind(objs, "StatefulSet")...)
	if len(found) != 1 {
		t.Fatalf("want one Deployment or StatefulSet, the install renders %d", len(found))
	}
	return found[0]
}

// podNamespaceOf is the namespace whose StatefulSet the workload shards by
// (--pod), or "" when it does not shard.
func podNamespaceOf(t *testing.T, w *unstructured.Unstructured) string {
	t.Helper()
	for _, a := range containerArgs(t, w) {
		if strings.HasPrefix(a, "--pod=") {
			return w.GetNamespace()
		}
	}
	return ""
}

// TestInstall renders the Helm chart (defaults and every toggle on) and the
// kustomize manifests (base and every component), applies all of it to a
// full API server, and runs the real exporter as each install's
// ServiceAccount with exactly the RBAC the install created.
func TestInstall(t *testing.T) {
	helm := helmBinary(t)
	kubectl := kubectlBinary(t)
	installs := []struct {
		name string
		objs []*unstructured.Unstructured
		// run is the install whose Deployment is run as its ServiceAccount;
		// the all-on chart's flags point at files only a pod has.
		run bool
	}{
		{"chart defaults", helmTemplate(t, helm, "chart", "monitoring"), true},
		{"chart with every toggle", helmTemplate(t, helm, "all", "monitoring-all", "-f", allOnValues), false},
		{"kustomize base", kustomizeBuild(t, kubectl, deployDir), true},
		{"kustomize with every component", kustomizeWithComponents(t, kubectl, components...), false},
		{"chart with autosharding", helmTemplate(t, helm, "shards", "monitoring-shards", "--set", "autosharding.enabled=true"), true},
	}

	c := newCluster(t, apiserver.ModeFull)
	ctx := t.Context()
	admin := c.srv.RESTConfig()
	kc, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	monitoringCRDs, err := monitoring.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	artifactGenerator, err := os.ReadFile(filepath.Join("testdata", "crds", "artifactgenerator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.srv.InstallCRDs(ctx, append(monitoringCRDs, artifactGenerator)...); err != nil {
		t.Fatal(err)
	}
	// helm and kubectl apply need the namespaces to exist; neither install
	// creates one.
	for _, ns := range []string{standin.Namespace, "monitoring", "monitoring-all", "monitoring-shards", "apps"} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metaCreate); err != nil {
			t.Fatal(err)
		}
	}

	if !t.Run("the API server accepts every rendered object", func(t *testing.T) {
		a := newApplier(t, admin)
		for _, in := range installs {
			for _, u := range in.objs {
				if err := a.apply(ctx, u); err != nil {
					t.Errorf("%s: %s %s/%s rejected: %v", in.name, u.GetKind(), u.GetNamespace(), u.GetName(), err)
				}
			}
		}
	}) {
		t.FailNow()
	}

	t.Run("RBAC grants exactly what the exporter needs", func(t *testing.T) {
		for _, in := range installs {
			dep := workloadOf(t, in.objs)
			ns, sa := serviceAccountOf(t, dep)
			got, err := grantsTo(in.objs, ns, sa)
			if err != nil {
				t.Errorf("%s: %v", in.name, err)
				continue
			}
			if diff := diffGrants(got, neededGrants(fluxNamespaceOf(t, dep), podNamespaceOf(t, dep))); diff != "" {
				t.Errorf("%s: the ServiceAccount %s/%s is granted other than what flux_exporter needs:\n%s", in.name, ns, sa, diff)
			}
		}
	})

	// What the exporter should find: a Flux object, and a Flux controller
	// with a Deployment and a Pod serving /metrics.
	c.apply(t, []byte(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: apps}
spec: {interval: 1m, url: "https://github.com/stefanprodan/podinfo", ref: {branch: master}}
`))
	endpoint := serveEndpoint(t, standin.MetricsHandler())
	cs := &controllers{t: t, kc: kc}
	cs.deploy("source-controller", "v2.7.1", "ghcr.io/fluxcd/source-controller:v1.7.1", 1)
	cs.pod("source-controller", "source-controller-0", "v2.7.1", endpoint.port, true)
	cs.status("source-controller", 1, 1, 1)

	t.Run("GOMEMLIMIT follows the memory limit", func(t *testing.T) {
		for _, in := range installs {
			if err := checkGoMemLimit(workloadOf(t, in.objs)); err != nil {
				t.Errorf("%s: %v", in.name, err)
			}
		}
	})

	for _, in := range installs {
		if !in.run {
			continue
		}
		t.Run("runs as the ServiceAccount of the "+in.name, func(t *testing.T) {
			dep := workloadOf(t, in.objs)
			ns, sa := serviceAccountOf(t, dep)
			cfg, err := c.srv.ServiceAccountConfig(ctx, ns, sa)
			if err != nil {
				t.Fatal(err)
			}
			podNS := podNamespaceOf(t, dep)
			pod := ""
			if podNS != "" {
				// No controller manager runs: make the StatefulSet's first
				// pod as its controller would, for --pod to find.
				pod = statefulSetPod(t, kc, dep, 0)
			}
			waitForGrants(t, cfg, fluxNamespaceOf(t, dep), podNS, pod)
			args := localArgs(t, dep)
			for i, a := range args {
				args[i] = strings.NewReplacer("$(POD_NAME)", pod, "$(POD_NAMESPACE)", podNS).Replace(a)
			}
			e := startExporter(t, writeTokenKubeconfig(t, cfg), args...)
			e.waitReady()
			controllers := !slices.Contains(args, "--no-collector.controllers")
			eventually(t, 30*time.Second, func() error { return everyCollectorSucceeds(e.scrape(), controllers) })
			if podNS != "" {
				// One replica, so shard 0 of 1, read from the StatefulSet.
				if err := checkShardMetrics(e.scrape(), 0, 1); err != nil {
					t.Error(err)
				}
			}
			deniedEverythingElse(t, cfg, c.dyn, podNS)
		})
	}
}

// statefulSetPod creates the pod of this ordinal for the rendered
// StatefulSet, owned by the one the API server holds.
func statefulSetPod(t *testing.T, kc kubernetes.Interface, w *unstructured.Unstructured, ordinal int) string {
	t.Helper()
	sts, err := kc.AppsV1().StatefulSets(w.GetNamespace()).Get(t.Context(), w.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", sts.Name, ordinal), Namespace: sts.Namespace, Labels: sts.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID, Controller: &yes}}},
		Spec: sts.Spec.Template.Spec,
	}
	if _, err := kc.CoreV1().Pods(sts.Namespace).Create(t.Context(), pod, metaCreate); err != nil {
		t.Fatal(err)
	}
	return pod.Name
}

// checkGoMemLimit: the container has a memory limit, and GOMEMLIMIT is
// that limit, in bytes, through the downward API.
func checkGoMemLimit(w *unstructured.Unstructured) error {
	containers, _, _ := unstructured.NestedSlice(w.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		return fmt.Errorf("%s %s: want one container", w.GetKind(), w.GetName())
	}
	c := containers[0].(map[string]any)
	if limit, _, _ := unstructured.NestedString(c, "resources", "limits", "memory"); limit == "" {
		return fmt.Errorf("%s %s: the container has no memory limit for GOMEMLIMIT to follow", w.GetKind(), w.GetName())
	}
	env, _, _ := unstructured.NestedSlice(c, "env")
	for _, e := range env {
		e := e.(map[string]any)
		if e["name"] != "GOMEMLIMIT" {
			continue
		}
		ref, _, _ := unstructured.NestedStringMap(e, "valueFrom", "resourceFieldRef")
		if ref["resource"] != "limits.memory" || ref["containerName"] != c["name"] || (ref["divisor"] != "" && ref["divisor"] != "1") {
			return fmt.Errorf("%s %s: GOMEMLIMIT is %v, want the container's limits.memory in bytes", w.GetKind(), w.GetName(), e["valueFrom"])
		}
		return nil
	}
	return fmt.Errorf("%s %s: no GOMEMLIMIT in the container's env", w.GetKind(), w.GetName())
}

// everyCollectorSucceeds checks the scrape of an exporter that should see
// the test's Flux object and, with the controllers collector, its
// controller.
func everyCollectorSucceeds(s scrape, controllers bool) error {
	collectors := s.find("flux_exporter_collector_success", nil)
	seen := map[string]bool{}
	for _, m := range collectors {
		name := labels(m)["collector"]
		seen[name] = true
		if v := m.GetGauge().GetValue(); v != 1 {
			return fmt.Errorf("collector %q failed (flux_exporter_collector_success %v)", name, v)
		}
	}
	if !seen["resources"] || seen["controllers"] != controllers {
		return fmt.Errorf("want the resources collector and controllers=%v:\n%s", controllers, grep(s.text, "flux_exporter_collector_success"))
	}
	for kind := range gvrs {
		if v, ok := s.value("flux_exporter_kind_synced", map[string]string{"kind": kind}); !ok || v != 1 {
			return fmt.Errorf("kind %s not synced:\n%s", kind, grep(s.text, "flux_exporter_kind_synced"))
		}
	}
	if len(s.find("flux_resource_info", map[string]string{"kind": "GitRepository", "exported_namespace": "apps", "name": "podinfo"})) != 1 {
		return fmt.Errorf("GitRepository apps/podinfo missing:\n%s", grep(s.text, "flux_resource_info"))
	}
	if controllers {
		return s.scraped("source-controller", "source-controller-0", 1)
	}
	return nil
}

// waitForGrants waits until the account can read what its bindings grant:
// RBAC changes reach the authorizer through informers.
func waitForGrants(t *testing.T, cfg *rest.Config, fluxNamespace, podNamespace, pod string) {
	t.Helper()
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	saDyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list := metav1.ListOptions{Limit: 1}
	eventually(t, 30*time.Second, func() error {
		if _, err := saDyn.Resource(crdGVR).List(t.Context(), list); err != nil {
			return err
		}
		if _, err := saDyn.Resource(gvrs["GitRepository"]).List(t.Context(), list); err != nil {
			return err
		}
		if _, err := sa.AppsV1().Deployments(fluxNamespace).List(t.Context(), list); err != nil {
			return err
		}
		if _, err := sa.CoreV1().Pods(fluxNamespace).List(t.Context(), list); err != nil {
			return err
		}
		if podNamespace == "" {
			return nil
		}
		if _, err := sa.CoreV1().Pods(podNamespace).Get(t.Context(), pod, metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := sa.AppsV1().StatefulSets(podNamespace).List(t.Context(), list)
		return err
	})
}

// deniedEverythingElse checks that the account can neither read Secrets nor
// write anything, by trying; with autosharding, that it can neither list the
// pods of podNamespace nor scale its StatefulSet.
func deniedEverythingElse(t *testing.T, cfg *rest.Config, admin dynamic.Interface, podNamespace string) {
	t.Helper()
	ctx := t.Context()
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	saDyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := standin.Namespace
	gitRepos := saDyn.Resource(gvrs["GitRepository"]).Namespace("apps")
	newRepo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "intruder", "namespace": "apps"},
		"spec":     map[string]any{"interval": "1m", "url": "https://example.com/repo"},
	}}
	suspend := []byte(`{"spec":{"suspend":true}}`)
	type check struct {
		what string
		do   func() error
	}
	var sharded []check
	if podNamespace != "" {
		sharded = []check{
			{"list Pods in " + podNamespace, func() error { _, err := sa.CoreV1().Pods(podNamespace).List(ctx, metav1.ListOptions{}); return err }},
			{"scale a StatefulSet", func() error {
				_, err := sa.AppsV1().StatefulSets(podNamespace).Patch(ctx, "shards-flux-exporter", types.MergePatchType, []byte(`{"spec":{"replicas":5}}`), metav1.PatchOptions{})
				return err
			}},
			{"get StatefulSets cluster-wide", func() error { _, err := sa.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{}); return err }},
		}
	}
	for _, tc := range append(sharded, []check{
		{"list Secrets in " + ns, func() error { _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err }},
		{"list Secrets cluster-wide", func() error { _, err := sa.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err }},
		{"get a Secret", func() error {
			_, err := sa.CoreV1().Secrets(ns).Get(ctx, "flux-exporter-events", metav1.GetOptions{})
			return err
		}},
		{"watch Secrets", func() error {
			w, err := sa.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"create a GitRepository", func() error { _, err := gitRepos.Create(ctx, newRepo, metaCreate); return err }},
		{"update a GitRepository", func() error {
			u, err := admin.Resource(gvrs["GitRepository"]).Namespace("apps").Get(ctx, "podinfo", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("admin get: %v", err)
			}
			_, err = gitRepos.Update(ctx, u, metaUpdate)
			return err
		}},
		{"patch a GitRepository", func() error {
			_, err := gitRepos.Patch(ctx, "podinfo", types.MergePatchType, suspend, metav1.PatchOptions{})
			return err
		}},
		{"patch a GitRepository's status", func() error {
			_, err := gitRepos.Patch(ctx, "podinfo", types.MergePatchType, []byte(`{"status":{}}`), metav1.PatchOptions{}, "status")
			return err
		}},
		{"delete a GitRepository", func() error { return gitRepos.Delete(ctx, "podinfo", metav1.DeleteOptions{}) }},
		{"delete all Kustomizations", func() error {
			return saDyn.Resource(gvrs["Kustomization"]).Namespace("apps").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		}},
		{"delete a CRD", func() error {
			return saDyn.Resource(crdGVR).Delete(ctx, "gitrepositories.source.toolkit.fluxcd.io", metav1.DeleteOptions{})
		}},
		{"create a Pod", func() error {
			_, err := sa.CoreV1().Pods(ns).Create(ctx, standin.Pod("intruder", "intruder-0", "v0", "busybox", 8080), metaCreate)
			return err
		}},
		{"delete a Pod", func() error { return sa.CoreV1().Pods(ns).Delete(ctx, "source-controller-0", metav1.DeleteOptions{}) }},
		{"proxy to a Pod", func() error {
			_, err := sa.CoreV1().Pods(ns).ProxyGet("http", "source-controller-0", "8080", "/metrics", nil).DoRaw(ctx)
			return err
		}},
		{"scale a Deployment", func() error {
			_, err := sa.AppsV1().Deployments(ns).Patch(ctx, "source-controller", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{})
			return err
		}},
		{"delete a Deployment", func() error {
			return sa.AppsV1().Deployments(ns).Delete(ctx, "source-controller", metav1.DeleteOptions{})
		}},
	}...) {
		if err := tc.do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: got %v, want Forbidden", tc.what, err)
		}
	}
}

// localArgs are the rendered container's flags, minus those that only make
// sense in a pod: startExporter listens on 127.0.0.1:0, logs JSON and reads
// the ServiceAccount's kubeconfig.
func localArgs(t *testing.T, dep *unstructured.Unstructured) []string {
	t.Helper()
	var out []string
	for _, a := range containerArgs(t, dep) {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch name {
		case "web.listen-address", "log.format", "log.level", "kube.config", "kube.context":
			continue
		}
		out = append(out, a)
	}
	return out
}

func containerArgs(t *testing.T, dep *unstructured.Unstructured) []string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		t.Fatalf("Deployment %s: want one container, got %d (%v)", dep.GetName(), len(containers), err)
	}
	args, _, err := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if err != nil {
		t.Fatalf("Deployment %s args: %v", dep.GetName(), err)
	}
	return args
}

func serviceAccountOf(t *testing.T, dep *unstructured.Unstructured) (namespace, name string) {
	t.Helper()
	name, _, _ = unstructured.NestedString(dep.Object, "spec", "template", "spec", "serviceAccountName")
	if name == "" || dep.GetNamespace() == "" {
		t.Fatalf("Deployment %s names no ServiceAccount or namespace", dep.GetName())
	}
	return dep.GetNamespace(), name
}

// fluxNamespaceOf is the --flux.namespace the Deployment runs with, or the
// exporter's default.
func fluxNamespaceOf(t *testing.T, dep *unstructured.Unstructured) string {
	t.Helper()
	ns := standin.Namespace
	for _, a := range containerArgs(t, dep) {
		if v, ok := strings.CutPrefix(a, "--flux.namespace="); ok {
			ns = v
		}
	}
	return ns
}

// grantsTo expands every rule that the rendered bindings give the
// ServiceAccount. Anything it cannot account for exactly is an error: a
// binding to a role the install does not ship, a role nothing binds, a
// binding for another subject, resourceNames or non-resource URLs.
func grantsTo(objs []*unstructured.Unstructured, namespace, name string) (map[grant]bool, error) {
	roles := map[string]*unstructured.Unstructured{} // kind/namespace/name
	bound := map[string]bool{}
	for _, u := range objs {
		if u.GetKind() == "Role" || u.GetKind() == "ClusterRole" {
			roles[u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName()] = u
		}
	}
	out := map[grant]bool{}
	var errs []error
	for _, u := range objs {
		if u.GetKind() != "RoleBinding" && u.GetKind() != "ClusterRoleBinding" {
			continue
		}
		subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
		for _, s := range subjects {
			s := s.(map[string]any)
			if s["kind"] != "ServiceAccount" || s["namespace"] != namespace || s["name"] != name {
				errs = append(errs, fmt.Errorf("%s %s binds %v, not the exporter's ServiceAccount %s/%s", u.GetKind(), u.GetName(), s, namespace, name))
			}
		}
		refKind, _, _ := unstructured.NestedString(u.Object, "roleRef", "kind")
		refName, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
		roleNS := ""
		if refKind == "Role" {
			roleNS = u.GetNamespace()
		}
		key := refKind + "/" + roleNS + "/" + refName
		role, ok := roles[key]
		if !ok {
			errs = append(errs, fmt.Errorf("%s %s/%s binds %s, which the install does not ship", u.GetKind(), u.GetNamespace(), u.GetName(), key))
			continue
		}
		bound[key] = true
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		for _, r := range rules {
			var rule struct {
				APIGroups, Resources, Verbs, ResourceNames, NonResourceURLs []string
			}
			if err := fromUnstructured(r, &rule); err != nil {
				return nil, err
			}
			if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
				errs = append(errs, fmt.Errorf("%s has a rule with resourceNames or nonResourceURLs: %v", key, r))
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						out[grant{u.GetNamespace(), g, res, v}] = true
					}
				}
			}
		}
	}
	for key := range roles {
		if !bound[key] {
			errs = append(errs, fmt.Errorf("%s is shipped but bound to nothing", key))
		}
	}
	return out, errors.Join(errs...)
}

func fromUnstructured(in any, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func diffGrants(got, want map[grant]bool) string {
	var lines []string
	for g := range got {
		if !want[g] {
			lines = append(lines, "  extra:   "+g.String())
		}
	}
	for g := range want {
		if !got[g] {
			lines = append(lines, "  missing: "+g.String())
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// applier writes objects with server-side apply and strict field
// validation, as `kubectl apply --server-side` does: the API server, with
// the real CRD schemas, decides.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}
}

func (a *applier) apply(ctx context.Context, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("the API server does not serve %s: %w", gvk, err)
	}
	var res dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			return errors.New("namespaced object without a namespace")
		}
		res = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	body, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = res.Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		FieldManager: "flux-exporter-install-test", Force: &force, FieldValidation: metav1.FieldValidationStrict,
	})
	return err
}

// helmBinary is the helm built from the version pinned in tools/helm, so
// the chart is checked with the Helm users run.
func helmBinary(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(repoRoot, ".bin", "helm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("helm is missing (%v): build it with `make .bin/helm`, which compiles the version pinned in tools/helm/go.mod", err)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "tools", "helm", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`(?m)^\s*helm\.sh/helm/v\d+ (v\S+)`).FindSubmatch(gomod)
	if pinned == nil {
		t.Fatal("tools/helm/go.mod requires no helm.sh/helm module")
	}
	if got := strings.TrimSpace(string(command(t, "", path, "version", "--template", "{{.Version}}"))); got != string(pinned[1]) {
		t.Fatalf("%s is helm %s, tools/helm/go.mod pins %s: rebuild it with `make .bin/helm`", path, got, pinned[1])
	}
	return path
}

func kubectlBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl (v1.32 or later, with kustomize built in) is not on PATH: install it as .ci/run does (%v)", err)
	}
	return path
}

// command runs a tool and returns its standard output; the test fails with
// its standard error if it fails.
func command(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	out, stderr, err := commandResult(t, dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr)
	}
	return out
}

func commandResult(t *testing.T, dir, name string, args ...string) (stdout []byte, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.Bytes(), errOut.String(), err
}

func helmTemplate(t *testing.T, helm, release, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	return decodeObjects(t, command(t, "", helm, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...))
}

func kustomizeBuild(t *testing.T, kubectl, dir string) []*unstructured.Unstructured {
	t.Helper()
	return decodeObjects(t, command(t, "", kubectl, "kustomize", dir))
}

// kustomizeWithComponents builds an overlay of the base with components, as
// a user would, in a copy of the repository's layout, after running
// deploy/generate.sh there. The working tree is left alone.
func kustomizeWithComponents(t *testing.T, kubectl string, names ...string) []*unstructured.Unstructured {
	t.Helper()
	root := t.TempDir()
	copyTree(t, deployDir, filepath.Join(root, "deploy"))
	copyFile(t, rulesFile, filepath.Join(root, "alerts", filepath.Base(rulesFile)))
	dashboards, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboards in %s (%v)", dashboardDir, err)
	}
	for _, d := range dashboards {
		copyFile(t, d, filepath.Join(root, "dashboards", filepath.Base(d)))
	}
	command(t, root, "sh", filepath.Join("deploy", "generate.sh"))

	overlay := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../deploy\ncomponents:\n"
	for _, n := range names {
		overlay += "  - ../deploy/components/" + n + "\n"
	}
	writeFile(t, filepath.Join(root, "overlay", "kustomization.yaml"), []byte(overlay))
	return kustomizeBuild(t, kubectl, filepath.Join(root, "overlay"))
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		copyFile(t, path, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, info.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// decodeObjects splits a multi-document manifest into objects.
func decodeObjects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode manifest: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		t.Fatal("the manifest holds no objects")
	}
	return out
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func only1(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := ofKind(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want one %s, the install renders %d", kind, len(found))
	}
	return found[0]
}

// TestChartSchemaRejectsBadValues runs the checks `helm install` runs before
// it touches a cluster: values.schema.json and the chart's own checks.
func TestChartSchemaRejectsBadValues(t *testing.T) {
	helm := helmBinary(t)
	for _, tc := range []struct {
		set, want string
	}{
		{"replicaCount=abc", "/replicaCount"},
		{"web.port=http", "/web/port"},
		{"web.port=70000", "/web/port"},
		{"kube.burst=1.5", "/kube/burst"},
		{"serviceMonitor.enabled=yes", "/serviceMonitor/enabled"},
		{"controllers.timeout=soon", "/controllers/timeout"},
		{"log.level=verbose", "/log/level"},
		{"replicas=2", "'replicas' not allowed"},
		{"prometheusRule.rules.FluxResourceNotReady.severity=page", "/prometheusRule/rules/FluxResourceNotReady/severity"},
		{"prometheusRule.enabled=true,prometheusRule.rules.NoSuchAlert.for=1h", "prometheusRule.rules.NoSuchAlert"},
		{"webConfig.enabled=true", "webConfig.enabled needs"},
		{"flux.apiGroups={source}", "/flux/apiGroups/0"},
		{"flux.apiGroups={Source.toolkit.fluxcd.io}", "/flux/apiGroups/0"},
		{"flux.apiGroups={}", "/flux/apiGroups"},
		{"autosharding.enabled=yes", "/autosharding/enabled"},
		{"autosharding.replicas=3", "'replicas' not allowed"},
		{"metricAllowlist={a,a}", "/metricAllowlist"},
		{"metricAllowlist={a},metricDenylist={b}", "exclude each other"},
		{"metricLabelsAllowlist[0]=Kustomization=[team]", "/metricLabelsAllowlist/0"},
		{"metricAnnotationsAllowlist[0]=kustomizations", "/metricAnnotationsAllowlist/0"},
		{"compat.gotkResourceInfo=yes", "/compat/gotkResourceInfo"},
	} {
		out, stderr, err := commandResult(t, "", helm, "template", "x", chartDir, "--set", tc.set)
		if err == nil {
			t.Errorf("--set %s: helm template succeeded, want a failure naming %q:\n%.500s", tc.set, tc.want, out)
			continue
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("--set %s: the error does not name %q:\n%s", tc.set, tc.want, stderr)
		}
	}
	for _, values := range [][]string{nil, {"-f", allOnValues}} {
		command(t, "", helm, append([]string{"lint", "--strict", chartDir}, values...)...)
	}
}

// helpFlagRE matches the flag column of kingpin's --help, not flags named
// in the descriptions beside it.
var helpFlagRE = regexp.MustCompile(`(?m)^  (?:-\w, |    )--(?:\[no-\])?([a-z][a-z0-9.-]*[a-z0-9])`)

// TestChartSetsEveryFlag renders the chart with every value set and checks
// that the container gets every flag of `flux_exporter --help`, and that
// the exporter accepts the lot: with a kubeconfig that does not exist, it
// gets past flag parsing (exit 2) to the Kubernetes client (exit 1).
func TestChartSetsEveryFlag(t *testing.T) {
	helm := helmBinary(t)
	args := containerArgs(t, workloadOf(t, helmTemplate(t, helm, "all", "monitoring", "-f", allOnValues)))
	rendered := map[string]bool{}
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		rendered[strings.TrimPrefix(name, "no-")] = true
	}
	help := runExporter(t, "--help")
	if code := help.wait(30 * time.Second); code != 0 {
		t.Fatalf("flux_exporter --help exited %d:\n%s", code, help.logs)
	}
	flags := helpFlagRE.FindAllStringSubmatch(help.logs.String(), -1)
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in --help:\n%s", len(flags), help.logs)
	}
	// Flags a pod has no use for, and those the all-on values cannot set
	// beside the ones they do: the chart shards by --pod (autosharding),
	// since every pod of a Deployment would get the same --shard, and
	// --metric-denylist excludes the --metric-allowlist it sets
	// (TestChartMetricLists renders it).
	notForPods := []string{"help", "version", "web.systemd-socket", "shard", "total-shards", "metric-denylist"}
	for _, f := range flags {
		if !rendered[f[1]] && !slices.Contains(notForPods, f[1]) {
			t.Errorf("--%s has no value in the chart: add one to values.yaml, values.schema.json and templates/_helpers.tpl", f[1])
		}
	}

	e := runExporter(t, args...)
	if code := e.wait(30 * time.Second); code != 1 || !strings.Contains(e.logs.String(), "Cannot configure the Kubernetes client") {
		t.Errorf("with the chart's flags, flux_exporter exited %d, want 1 at the Kubernetes client (2 is a flag it rejects):\n%s", code, e.logs)
	}
}

// TestInstallsShipTheSingleSources checks that the PrometheusRule and the
// dashboard ConfigMaps of both installs are the files in alerts/ and
// dashboards/, and that the chart's overrides change only what they name.
func TestInstallsShipTheSingleSources(t *testing.T) {
	helm := helmBinary(t)
	kubectl := kubectlBinary(t)
	source := map[string]any{}
	if err := yaml.Unmarshal(readFile(t, rulesFile), &source); err != nil {
		t.Fatal(err)
	}
	chart := helmTemplate(t, helm, "x", "monitoring", "--set", "prometheusRule.enabled=true,dashboards.enabled=true")
	kust := kustomizeWithComponents(t, kubectl, "prometheusrule", "dashboards")
	for name, objs := range map[string][]*unstructured.Unstructured{"chart": chart, "kustomize": kust} {
		spec, _, _ := unstructured.NestedMap(only1(t, objs, "PrometheusRule").Object, "spec")
		if diff := jsonDiff(t, spec, source); diff != "" {
			t.Errorf("%s: PrometheusRule spec differs from %s: %s", name, rulesFile, diff)
		}
		checkDashboards(t, name, ofKind(objs, "ConfigMap"))
	}

	// Overrides from ci/all-on-values.yaml.
	all := only1(t, helmTemplate(t, helm, "all", "monitoring", "-f", allOnValues), "PrometheusRule")
	groups, _, _ := unstructured.NestedSlice(all.Object, "spec", "groups")
	alerts := map[string]map[string]any{}
	var threshold any
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			r := r.(map[string]any)
			if name, ok := r["alert"].(string); ok {
				alerts[name] = r
			}
			if r["record"] == "flux:source_fetch_failing_threshold:seconds" {
				threshold = r["expr"]
			}
		}
	}
	if threshold != "vector(3600)" {
		t.Errorf("sourceFetchFailingThresholdSeconds=3600 recorded %v, want vector(3600)", threshold)
	}
	if _, ok := alerts["FluxHelmReleaseDrifted"]; ok {
		t.Error("FluxHelmReleaseDrifted is disabled in the values but still rendered")
	}
	notReady := alerts["FluxResourceNotReady"]
	if notReady["for"] != "30m" || fmt.Sprint(notReady["labels"]) != fmt.Sprint(map[string]any{"page": "true", "severity": "critical", "team": "platform"}) {
		t.Errorf("FluxResourceNotReady overrides not applied: for %v, labels %v", notReady["for"], notReady["labels"])
	}
	want := 0
	for _, g := range source["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			r := r.(map[string]any)
			name, ok := r["alert"].(string)
			if !ok || name == "FluxHelmReleaseDrifted" {
				continue
			}
			want++
			got := alerts[name]
			if got["expr"] != r["expr"] || got["labels"].(map[string]any)["team"] != "platform" {
				t.Errorf("%s: expr changed or additionalRuleLabels missing: %v", name, got)
			}
		}
	}
	if len(alerts) != want {
		t.Errorf("rendered %d alerts, want %d", len(alerts), want)
	}
}

func checkDashboards(t *testing.T, install string, configMaps []*unstructured.Unstructured) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	shipped := map[string]string{}
	for _, cm := range configMaps {
		if cm.GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("%s: ConfigMap %s lacks the label grafana_dashboard: \"1\"", install, cm.GetName())
		}
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		for k, v := range data {
			shipped[k] = v
		}
	}
	if len(shipped) != len(files) {
		t.Errorf("%s ships %d dashboards, dashboards/ has %d", install, len(shipped), len(files))
	}
	for _, f := range files {
		got, ok := shipped[filepath.Base(f)]
		if !ok {
			t.Errorf("%s: no ConfigMap holds %s", install, filepath.Base(f))
			continue
		}
		if got != strings.TrimRight(string(readFile(t, f)), "\n") {
			t.Errorf("%s: %s differs from the file", install, filepath.Base(f))
		}
	}
}

// jsonDiff compares two decoded YAML documents and describes the first
// difference, or returns "".
func jsonDiff(t *testing.T, got, want any) string {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(g, w) {
		return ""
	}
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	from := max(0, i-80)
	return fmt.Sprintf("first difference at byte %d:\n got: …%.200s\nwant: …%.200s", i, g[from:], w[from:])
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInstallVersions keeps the chart and the kustomize image on the
// version in VERSION, and the generated kustomize inputs out of git.
func TestInstallVersions(t *testing.T) {
	version := strings.TrimSpace(string(readFile(t, filepath.Join(repoRoot, "VERSION"))))
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(readFile(t, filepath.Join(chartDir, "Chart.yaml")), &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != version || chart.AppVersion != version {
		t.Errorf("Chart.yaml version %q, appVersion %q; VERSION is %q", chart.Version, chart.AppVersion, version)
	}
	var values struct{ Image struct{ Repository string } }
	if err := yaml.Unmarshal(readFile(t, filepath.Join(chartDir, "values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Images []struct{ Name, NewTag string }
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(deployDir, "kustomization.yaml")), &kust); err != nil {
		t.Fatal(err)
	}
	if len(kust.Images) != 1 || kust.Images[0].Name != values.Image.Repository || kust.Images[0].NewTag != "v"+version {
		t.Errorf("deploy/kustomization.yaml images %+v, want %s:v%s as in the chart", kust.Images, values.Image.Repository, version)
	}
	for _, generated := range []string{
		"deploy/components/prometheusrule/prometheusrule.yaml",
		"deploy/components/dashboards/dashboards.yaml",
		"deploy/components/events/token",
	} {
		if _, stderr, err := commandResult(t, repoRoot, "git", "check-ignore", "-q", "--no-index", generated); err != nil {
			t.Errorf("%s is written by deploy/generate.sh and must be gitignored: git check-ignore: %v %s", generated, err, stderr)
		}
	}
}

// TestChartAPIGroupsValue checks that flux.apiGroups is the one source of
// the groups in the chart: the ClusterRole grants exactly them and the
// exporter is told to watch exactly them.
func TestChartAPIGroupsValue(t *testing.T) {
	helm := helmBinary(t)
	want := []string{"fluxcd.controlplane.io", "source.toolkit.fluxcd.io"}
	objs := helmTemplate(t, helm, "x", "monitoring", "--set", "flux.apiGroups={"+strings.Join(want, ",")+"}")
	if args := containerArgs(t, only1(t, objs, "Deployment")); !slices.Contains(args, "--flux.api-groups="+strings.Join(want, ",")) {
		t.Errorf("the container's args lack --flux.api-groups=%s: %v", strings.Join(want, ","), args)
	}
	rules, _, _ := unstructured.NestedSlice(only1(t, objs, "ClusterRole").Object, "rules")
	var granted [][]string
	for _, r := range rules {
		var rule struct{ APIGroups, Resources []string }
		if err := fromUnstructured(r, &rule); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(rule.Resources, []string{"*"}) {
			granted = append(granted, rule.APIGroups)
		}
	}
	if len(granted) != 1 || !slices.Equal(granted[0], want) {
		t.Errorf("the ClusterRole grants every resource of %v, want exactly %v", granted, want)
	}
}

// TestChartMetricLists checks that metricAllowlist, metricDenylist and the
// label and annotation allowlists render as the flags, comma-joined, and
// are left out when empty.
func TestChartMetricLists(t *testing.T) {
	helm := helmBinary(t)
	for set, want := range map[string]string{
		"metricDenylist={flux_controller_.*,flux_event_.*}":                                "--metric-denylist=flux_controller_.*,flux_event_.*",
		"metricAllowlist={flux_resource_info}":                                             "--metric-allowlist=flux_resource_info",
		"metricLabelsAllowlist[0]=kustomizations=[team],metricLabelsAllowlist[1]=*=[tier]": "--metric-labels-allowlist=kustomizations=[team],*=[tier]",
		"metricAnnotationsAllowlist[0]=helmreleases=[owner]":                               "--metric-annotations-allowlist=helmreleases=[owner]",
	} {
		args := containerArgs(t, workloadOf(t, helmTemplate(t, helm, "x", "monitoring", "--set", set)))
		if !slices.Contains(args, want) {
			t.Errorf("--set %s: the args lack %s: %v", set, want, args)
		}
	}
	for _, a := range containerArgs(t, workloadOf(t, helmTemplate(t, helm, "x", "monitoring"))) {
		if strings.HasPrefix(a, "--metric-") {
			t.Errorf("the defaults render %s", a)
		}
	}
}
