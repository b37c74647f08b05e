package apiserver

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// pollTimeout bounds every wait for eventual state in these tests.
const pollTimeout = 30 * time.Second

// fluxKinds are the kinds in sandbox/crds/flux.
var fluxKinds = []string{
	"Alert", "Bucket", "ExternalArtifact", "GitRepository", "HelmChart", "HelmRelease",
	"HelmRepository", "ImagePolicy", "ImageRepository", "ImageUpdateAutomation",
	"Kustomization", "OCIRepository", "Provider", "Receiver",
}

var (
	gitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	kustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
)

func TestCRDMode(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{Mode: ModeCRD})
	testServesFlux(t, s)
}

func TestFullMode(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{Mode: ModeFull})
	testServesFlux(t, s)
	t.Run("AdminManagesNamespacesAndDeployments", func(t *testing.T) { testAdminDeployment(t, s) })
	t.Run("ServiceAccountHeldToRBAC", func(t *testing.T) { testServiceAccountRBAC(t, s) })
}

// testServesFlux checks what both modes must serve for the Flux kinds.
func testServesFlux(t *testing.T, s *Server) {
	t.Run("FluxCRDsEstablished", func(t *testing.T) { testFluxCRDsEstablished(t, s) })
	t.Run("GitRepositoryLifecycle", func(t *testing.T) { testGitRepositoryLifecycle(t, s) })
	t.Run("SchemaInvalidRejected", func(t *testing.T) { testSchemaInvalidRejected(t, s) })
	t.Run("ServerSideApply", func(t *testing.T) { testServerSideApply(t, s) })
	t.Run("Kubectl", func(t *testing.T) { testKubectl(t, s) })
}

func TestParallelServersAreIndependent(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"https://example.com/one.git", "https://example.com/two.git"} {
		t.Run(filepath.Base(url), func(t *testing.T) {
			t.Parallel()
			s := StartT(t, Options{})
			repos := dynamicClient(t, s).Resource(gitRepositories).Namespace("parallel")
			// Same namespace and name on both servers: shared storage would
			// make one create fail or one list show two objects.
			if _, err := repos.Create(t.Context(), gitRepository("parallel", "same-name", url), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create GitRepository: %v", err)
			}
			list, err := repos.List(t.Context(), metav1.ListOptions{})
			if err != nil {
				t.Fatalf("list GitRepositories: %v", err)
			}
			if len(list.Items) != 1 {
				t.Fatalf("server %s lists %d GitRepositories, want only its own 1", s.URL(), len(list.Items))
			}
			if got := nestedString(t, list.Items[0].Object, "spec", "url"); got != url {
				t.Errorf("server %s lists spec.url %q, want %q", s.URL(), got, url)
			}
			testStop(t, s)
		})
	}
}

// testStop checks that Stop, with a watch still open, shuts the server down
// within its bound, removes the temporary directory, and can be called again.
func testStop(t *testing.T, s *Server) {
	if _, err := os.Stat(s.dir); err != nil {
		t.Fatalf("temporary directory before Stop: %v", err)
	}
	w, err := dynamicClient(t, s).Resource(gitRepositories).Watch(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch GitRepositories: %v", err)
	}
	defer w.Stop()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop with an open watch: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory %s after Stop: err = %v, want it gone", s.dir, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := kubeClient(t, s).Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil {
		t.Errorf("server %s still answers after Stop", s.URL())
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, opts := range []Options{
		{Listen: "0.0.0.0:0"},
		{Listen: ":0"},
		{Listen: "localhost:0"},
		{Listen: "192.0.2.1:6443"},
		{Listen: "127.0.0.1"},
		{Listen: "127.0.0.1:http-alt-nope"},
		{Mode: "kind"},
	} {
		if s, err := Start(t.Context(), opts); err == nil {
			_ = s.Stop()
			t.Errorf("Start(%+v) succeeded, want an error", opts)
		}
	}
}

func testFluxCRDsEstablished(t *testing.T, s *Server) {
	client, err := clientset.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	list, err := client.ApiextensionsV1().CustomResourceDefinitions().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list CRDs: %v", err)
	}
	var kinds []string
	for _, crd := range list.Items {
		if !strings.HasSuffix(crd.Spec.Group, ".toolkit.fluxcd.io") {
			continue
		}
		kinds = append(kinds, crd.Spec.Names.Kind)
		established := false
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Errorf("CRD %s is not Established: %+v", crd.Name, crd.Status.Conditions)
		}
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, fluxKinds) {
		t.Errorf("Flux kinds served = %v, want %v", kinds, fluxKinds)
	}
}

func testGitRepositoryLifecycle(t *testing.T, s *Server) {
	ctx := t.Context()
	ns := namespace(t, s, "lifecycle")
	repos := dynamicClient(t, s).Resource(gitRepositories).Namespace(ns)

	w, err := repos.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch GitRepositories: %v", err)
	}
	defer w.Stop()

	const url = "https://github.com/stefanprodan/podinfo"
	if _, err := repos.Create(ctx, gitRepository(ns, "podinfo", url), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create GitRepository: %v", err)
	}
	got, err := repos.Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get GitRepository: %v", err)
	}
	if u := nestedString(t, got.Object, "spec", "url"); u != url {
		t.Errorf("spec.url = %q, want %q", u, url)
	}
	// The CRD schema defaults spec.timeout; a server ignoring the schema would not.
	if timeout := nestedString(t, got.Object, "spec", "timeout"); timeout != "60s" {
		t.Errorf("defaulted spec.timeout = %q, want 60s", timeout)
	}
	list, err := repos.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list GitRepositories: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].GetName() != "podinfo" {
		t.Fatalf("list = %d items, want just podinfo", len(list.Items))
	}
	waitForEvent(t, w, watch.Added, func(*unstructured.Unstructured) bool { return true })

	// Status goes through the status subresource, as the Flux controllers write it.
	const revision = "main@sha1:0123456789abcdef0123456789abcdef01234567"
	withStatus := got.DeepCopy()
	withStatus.Object["status"] = readyStatus(revision)
	updated, err := repos.UpdateStatus(ctx, withStatus, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if r := nestedString(t, updated.Object, "status", "artifact", "revision"); r != revision {
		t.Errorf("status.artifact.revision after UpdateStatus = %q, want %q", r, revision)
	}
	if updated.GetGeneration() != got.GetGeneration() {
		t.Errorf("generation moved from %d to %d on a status update", got.GetGeneration(), updated.GetGeneration())
	}
	waitForEvent(t, w, watch.Modified, func(u *unstructured.Unstructured) bool {
		r, _, _ := unstructured.NestedString(u.Object, "status", "artifact", "revision")
		return r == revision
	})

	// With the status subresource on, the main resource ignores status changes.
	edited := updated.DeepCopy()
	if err := unstructured.SetNestedField(edited.Object, "10m", "spec", "interval"); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(edited.Object, "main@sha1:ffffffffffffffffffffffffffffffffffffffff", "status", "artifact", "revision"); err != nil {
		t.Fatal(err)
	}
	after, err := repos.Update(ctx, edited, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update spec: %v", err)
	}
	if after.GetGeneration() != updated.GetGeneration()+1 {
		t.Errorf("generation after a spec change = %d, want %d", after.GetGeneration(), updated.GetGeneration()+1)
	}
	if r := nestedString(t, after.Object, "status", "artifact", "revision"); r != revision {
		t.Errorf("status changed through the main resource to %q, want it kept at %q", r, revision)
	}
}

func testSchemaInvalidRejected(t *testing.T, s *Server) {
	ns := namespace(t, s, "invalid")
	bad := gitRepository(ns, "bad", "ftp://example.com/repo.git")
	if err := unstructured.SetNestedField(bad.Object, "every day", "spec", "interval"); err != nil {
		t.Fatal(err)
	}
	_, err := dynamicClient(t, s).Resource(gitRepositories).Namespace(ns).Create(t.Context(), bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("create with a bad url and interval: err = %v, want Invalid", err)
	}
	for _, field := range []string{"spec.url", "spec.interval"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Invalid error does not name %s: %v", field, err)
		}
	}
}

func testServerSideApply(t *testing.T, s *Server) {
	ctx := t.Context()
	ns := namespace(t, s, "apply")
	ks := dynamicClient(t, s).Resource(kustomizations).Namespace(ns)
	const manager = "flux-sandbox-test"
	apply := func(interval string) *unstructured.Unstructured {
		t.Helper()
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kustomize.toolkit.fluxcd.io/v1",
			"kind":       "Kustomization",
			"metadata":   map[string]any{"name": "apps", "namespace": ns},
			"spec": map[string]any{
				"interval":  interval,
				"path":      "./kustomize",
				"prune":     true,
				"sourceRef": map[string]any{"kind": "GitRepository", "name": "podinfo"},
			},
		}}
		got, err := ks.Apply(ctx, "apps", obj, metav1.ApplyOptions{FieldManager: manager, Force: true})
		if err != nil {
			t.Fatalf("server-side apply: %v", err)
		}
		return got
	}
	first := apply("5m")
	second := apply("1m")
	if got := nestedString(t, second.Object, "spec", "interval"); got != "1m" {
		t.Errorf("spec.interval after second apply = %q, want 1m", got)
	}
	if second.GetGeneration() != first.GetGeneration()+1 {
		t.Errorf("generation = %d after a changing apply, want %d", second.GetGeneration(), first.GetGeneration()+1)
	}
	applied := false
	for _, mf := range second.GetManagedFields() {
		if mf.Manager == manager && mf.Operation == metav1.ManagedFieldsOperationApply {
			applied = true
		}
	}
	if !applied {
		t.Errorf("managedFields lack an Apply entry for %s: %+v", manager, second.GetManagedFields())
	}
}

func testKubectl(t *testing.T, s *Server) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is required for this test and was not found (%v); install kubectl v1.32, "+
			"e.g. `apt-get install -y kubectl` from the pkgs.k8s.io v1.32 apt repository", err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := s.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), pollTimeout)
		defer cancel()
		// A private discovery cache: ports get reused across runs.
		args = append([]string{"--kubeconfig", kubeconfig, "--cache-dir", filepath.Join(dir, "cache")}, args...)
		out, err := exec.CommandContext(ctx, kubectl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	names := strings.Fields(run("get", "customresourcedefinitions", "-o", "name"))
	var fluxCRDs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".toolkit.fluxcd.io") {
			fluxCRDs = append(fluxCRDs, n)
		}
	}
	if len(fluxCRDs) != len(fluxKinds) {
		t.Errorf("kubectl lists %d Flux CRDs, want %d:\n%s", len(fluxCRDs), len(fluxKinds), strings.Join(names, "\n"))
	}
	if !slices.Contains(names, "customresourcedefinition.apiextensions.k8s.io/gitrepositories.source.toolkit.fluxcd.io") {
		t.Errorf("kubectl does not list the GitRepository CRD:\n%s", strings.Join(names, "\n"))
	}

	// A short resource name needs discovery, which CRD mode must re-enable.
	ns := namespace(t, s, "kubectl")
	if _, err := dynamicClient(t, s).Resource(gitRepositories).Namespace(ns).Create(t.Context(),
		gitRepository(ns, "via-kubectl", "https://example.com/kubectl.git"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(run("get", "gitrepositories", "-n", ns, "-o", "name")); got != "gitrepository.source.toolkit.fluxcd.io/via-kubectl" {
		t.Errorf("kubectl get gitrepositories = %q, want the one created", got)
	}
}

func testAdminDeployment(t *testing.T, s *Server) {
	ctx := t.Context()
	admin := kubeClient(t, s)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flux-system"}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	labels := map[string]string{"app": "source-controller"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "source-controller", Namespace: "flux-system"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "manager", Image: "ghcr.io/fluxcd/source-controller:v1.7.0",
				}}},
			},
		},
	}
	created, err := admin.AppsV1().Deployments("flux-system").Create(ctx, dep, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Deployment: %v", err)
	}
	// No controller manager runs, so the test plays the Deployment controller.
	created.Status = appsv1.DeploymentStatus{
		ObservedGeneration: created.Generation,
		Replicas:           1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
	}
	if _, err := admin.AppsV1().Deployments("flux-system").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update Deployment status: %v", err)
	}
	got, err := admin.AppsV1().Deployments("flux-system").Get(ctx, "source-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Deployment: %v", err)
	}
	if got.Status.ReadyReplicas != 1 || got.Status.ObservedGeneration != created.Generation {
		t.Errorf("Deployment status = %+v, want 1 ready replica at generation %d", got.Status, created.Generation)
	}
}

func testServiceAccountRBAC(t *testing.T, s *Server) {
	ctx := t.Context()
	admin := kubeClient(t, s)
	const own, other, name = "team-a", "team-b", "reader"
	cfg, err := s.ServiceAccountConfig(ctx, own, name)
	if err != nil {
		t.Fatalf("ServiceAccountConfig: %v", err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", other, err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: own},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
	}
	if _, err := admin.RbacV1().Roles(own).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Role: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: own},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: own, Name: name}},
	}
	if _, err := admin.RbacV1().RoleBindings(own).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create RoleBinding: %v", err)
	}

	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review: %v", err)
	}
	if want := "system:serviceaccount:" + own + ":" + name; review.Status.UserInfo.Username != want {
		t.Fatalf("token authenticates as %q, want %q", review.Status.UserInfo.Username, want)
	}

	// RBAC reads Roles through informers, so the grant shows up shortly after creation.
	deadline := time.Now().Add(pollTimeout)
	for {
		_, err := sa.CoreV1().Pods(own).List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("list pods in %s as %s: %v, want it allowed by the Role", own, name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	denied := map[string]func() error{
		"list secrets in own namespace": func() error {
			_, err := sa.CoreV1().Secrets(own).List(ctx, metav1.ListOptions{})
			return err
		},
		"list pods in another namespace": func() error {
			_, err := sa.CoreV1().Pods(other).List(ctx, metav1.ListOptions{})
			return err
		},
		"delete a pod in own namespace": func() error {
			return sa.CoreV1().Pods(own).Delete(ctx, "any", metav1.DeleteOptions{})
		},
	}
	for what, call := range denied {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: err = %v, want Forbidden", what, err)
		}
	}
}

func TestServiceAccountConfigNeedsFullMode(t *testing.T) {
	s := &Server{mode: ModeCRD}
	if _, err := s.ServiceAccountConfig(t.Context(), "default", "reader"); err == nil {
		t.Fatal("ServiceAccountConfig in CRD mode succeeded, want an error")
	}
}

// namespace makes sure ns exists: only full mode enforces that namespaces exist.
func namespace(t *testing.T, s *Server, ns string) string {
	t.Helper()
	if s.Mode() != ModeFull {
		return ns
	}
	_, err := kubeClient(t, s).CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	return ns
}

func gitRepository(ns, name, url string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1",
		"kind":       "GitRepository",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"interval": "5m",
			"url":      url,
			"ref":      map[string]any{"branch": "main"},
		},
	}}
}

func readyStatus(revision string) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	return map[string]any{
		"observedGeneration": int64(1),
		"conditions": []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "Succeeded",
			"message":            "stored artifact for revision '" + revision + "'",
			"observedGeneration": int64(1), "lastTransitionTime": now,
		}},
		"artifact": map[string]any{
			"revision":       revision,
			"digest":         "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
			"path":           "gitrepository/lifecycle/podinfo/0123456.tar.gz",
			"url":            "http://source-controller.flux-system.svc.cluster.local./gitrepository/lifecycle/podinfo/0123456.tar.gz",
			"size":           int64(1024),
			"lastUpdateTime": now,
		},
	}
}

func waitForEvent(t *testing.T, w watch.Interface, typ watch.EventType, match func(*unstructured.Unstructured) bool) {
	t.Helper()
	timeout := time.After(pollTimeout)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before a matching %s event", typ)
			}
			if u, isObj := ev.Object.(*unstructured.Unstructured); isObj && ev.Type == typ && match(u) {
				return
			}
		case <-timeout:
			t.Fatalf("no matching %s event within %s", typ, pollTimeout)
		}
	}
}

func nestedString(t *testing.T, obj map[string]any, fields ...string) string {
	t.Helper()
	v, _, err := unstructured.NestedString(obj, fields...)
	if err != nil {
		t.Fatalf("read %s: %v", strings.Join(fields, "."), err)
	}
	return v
}

func dynamicClient(t *testing.T, s *Server) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func kubeClient(t *testing.T, s *Server) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
