package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// shardingFleet is big enough that each of three shards gets a fair share
// of every state, and small enough to apply in seconds.
var shardingFleet = fleet.Options{Seed: 11, Objects: 300, Namespaces: 5}

// perObjectSeries are a scrape's series that describe one Flux object (the
// families with exported_namespace), each as family{labels} → value.
func perObjectSeries(s scrape) map[string]string {
	out := map[string]string{}
	for name, fam := range s.fams {
		for _, m := range fam.GetMetric() {
			l := labels(m)
			if _, ok := l["exported_namespace"]; !ok || l["name"] == "" {
				continue
			}
			out[name+"{"+labelKey(l)+"}"] = strconv.FormatFloat(sampleValue(m), 'g', -1, 64)
		}
	}
	return out
}

// groupSeries are the series that add objects of a namespace up (the
// delivery groups: exported_namespace without name), by series.
func groupSeries(s scrape) map[string]float64 {
	out := map[string]float64{}
	for name, fam := range s.fams {
		for _, m := range fam.GetMetric() {
			if l := labels(m); l["exported_namespace"] != "" && l["name"] == "" {
				out[name+"{"+labelKey(l)+"}"] = sampleValue(m)
			}
		}
	}
	return out
}

// checkGroups checks that the shards' group series add up to the
// unsharded replica's: each shard adds up its own objects of the group.
func checkGroups(shards []scrape, whole scrape) error {
	sum := map[string]float64{}
	for _, s := range shards {
		for k, v := range groupSeries(s) {
			sum[k] += v
		}
	}
	want := groupSeries(whole)
	if len(want) == 0 {
		return fmt.Errorf("the unsharded replica exports no delivery group series")
	}
	if fmt.Sprint(sum) != fmt.Sprint(want) {
		return fmt.Errorf("the shards' delivery groups add up to\n%v\nthe unsharded replica's are\n%v", sum, want)
	}
	return nil
}

// objectsOf are the objects a scrape reports, from flux_resource_info.
func objectsOf(s scrape) map[objID]bool {
	out := map[objID]bool{}
	for _, m := range s.find("flux_resource_info", nil) {
		l := labels(m)
		out[objID{l["kind"], l["exported_namespace"], l["name"]}] = true
	}
	return out
}

// kindObjects is flux_exporter_kind_objects by group/kind.
func kindObjects(s scrape) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.find("flux_exporter_kind_objects", nil) {
		l := labels(m)
		out[l["group"]+"/"+l["kind"]] += m.GetGauge().GetValue()
	}
	return out
}

// checkShardMetrics checks what a replica says of its shard.
func checkShardMetrics(s scrape, shard, total int) error {
	ord, ok := s.value("flux_exporter_shard_ordinal", map[string]string{"shard_ordinal": strconv.Itoa(shard)})
	tot, ok2 := s.value("flux_exporter_total_shards", nil)
	if !ok || !ok2 || ord != float64(shard) || tot != float64(total) {
		return fmt.Errorf("shard metrics:\n%s%s; want shard %d of %d", grep(s.text, "flux_exporter_shard_ordinal"), grep(s.text, "flux_exporter_total_shards"), shard, total)
	}
	return nil
}

// uidsOf maps every listed object to its UID.
func uidsOf(listed map[string][]unstructured.Unstructured) map[objID]types.UID {
	out := map[objID]types.UID{}
	for _, objs := range listed {
		for i := range objs {
			out[idOf(&objs[i])] = objs[i].GetUID()
		}
	}
	return out
}

// graphOnly are the per-object families computed across all objects,
// which only an unsharded replica reports (docs/flux-semantics.md, rule 10):
// a shard cannot tell another shard's object from a missing one.
var graphOnly = []string{"flux_resource_dependency_missing", "flux_resource_dependents", "flux_resource_root_cause_info"}

func isGraphOnly(series string) bool {
	return slices.ContainsFunc(graphOnly, func(f string) bool { return strings.HasPrefix(series, f+"{") })
}

// checkPartition checks that the shards' scrapes split whole's objects:
// every per-object series of whole on exactly the replica of its object's
// shard, the shard the UID hashes to, and nothing else; the graph families
// on none of them, unless there is one shard, which sees the whole graph.
func checkPartition(shards []scrape, whole map[string]string, uids map[objID]types.UID) error {
	union := map[string]string{}
	owner := map[objID]int{}
	var problems []string
	graphSeries := 0
	whole = maps.Clone(whole)
	sharded := len(shards) > 1
	for k := range whole {
		if isGraphOnly(k) {
			graphSeries++
			if sharded {
				delete(whole, k)
			}
		}
	}
	if graphSeries == 0 {
		problems = append(problems, "the unsharded replica reports no dependency graph series")
	}
	for i, s := range shards {
		objs := objectsOf(s)
		for id := range objs {
			if prev, dup := owner[id]; dup {
				problems = append(problems, fmt.Sprintf("%v is on shards %d and %d", id, prev, i))
			}
			owner[id] = i
			uid, ok := uids[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("shard %d reports %v, which the server does not list", i, id))
			} else if want := kube.ShardOf(uid, len(shards)); want != i {
				problems = append(problems, fmt.Sprintf("%v (uid %s) is on shard %d, its UID hashes to %d", id, uid, i, want))
			}
		}
		for k, v := range perObjectSeries(s) {
			if sharded && isGraphOnly(k) {
				problems = append(problems, fmt.Sprintf("shard %d exports %s", i, k))
				continue
			}
			if _, dup := union[k]; dup {
				problems = append(problems, "two shards export "+k)
			}
			union[k] = v
		}
	}
	if len(owner) != len(uids) {
		problems = append(problems, fmt.Sprintf("the shards report %d objects, the server lists %d", len(owner), len(uids)))
	}
	for k, v := range whole {
		if got, ok := union[k]; !ok {
			problems = append(problems, "no shard exports "+k)
		} else if got != v {
			problems = append(problems, fmt.Sprintf("%s is %s on its shard, %s unsharded", k, got, v))
		}
	}
	for k := range union {
		if _, ok := whole[k]; !ok {
			problems = append(problems, "only the shards export "+k)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
		}
		return fmt.Errorf("%d problems:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	return nil
}

// TestShardsPartitionTheFleet runs three sharded exporters and an unsharded
// one against the same fleet: between them the shards export exactly the
// unsharded exporter's per-object series, each object on one shard only,
// the one its UID hashes to, and their kind-level object counts and
// delivery groups add up.
func TestShardsPartitionTheFleet(t *testing.T) {
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(shardingFleet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	listed := listFluxObjects(t, c)
	uids := uidsOf(listed)
	if len(uids) != shardingFleet.Objects {
		t.Fatalf("server lists %d Flux objects, the fleet has %d", len(uids), shardingFleet.Objects)
	}

	const total = 3
	whole := startExporter(t, c.kubeconfig)
	var shards []*exporter
	for i := range total {
		shards = append(shards, startExporter(t, c.kubeconfig, fmt.Sprintf("--shard=%d", i), fmt.Sprintf("--total-shards=%d", total)))
	}
	for _, e := range append([]*exporter{whole}, shards...) {
		e.waitReady()
	}

	var wholeScrape scrape
	var shardScrapes []scrape
	eventually(t, 30*time.Second, func() error {
		wholeScrape = whole.scrape()
		if n := len(objectsOf(wholeScrape)); n != len(uids) {
			return fmt.Errorf("the unsharded exporter reports %d objects, the server lists %d", n, len(uids))
		}
		shardScrapes = shardScrapes[:0]
		for _, e := range shards {
			shardScrapes = append(shardScrapes, e.scrape())
		}
		if err := checkPartition(shardScrapes, perObjectSeries(wholeScrape), uids); err != nil {
			return err
		}
		return checkGroups(shardScrapes, wholeScrape)
	})

	t.Run("each shard holds a fair share", func(t *testing.T) {
		for i, s := range shardScrapes {
			// 100 expected; a fair hash stays well within this.
			if n := len(objectsOf(s)); n < len(uids)/total*2/3 || n > len(uids)/total*4/3 {
				t.Errorf("shard %d holds %d of %d objects", i, n, len(uids))
			}
		}
	})
	t.Run("kind-level counts add up", func(t *testing.T) {
		sum := map[string]float64{}
		for _, s := range shardScrapes {
			for k, v := range kindObjects(s) {
				sum[k] += v
			}
		}
		if want := kindObjects(wholeScrape); !maps.Equal(sum, want) {
			t.Errorf("flux_exporter_kind_objects summed over the shards %v, unsharded %v", sum, want)
		}
	})
	t.Run("shard metrics", func(t *testing.T) {
		if err := checkShardMetrics(wholeScrape, 0, 1); err != nil {
			t.Error(err)
		}
		for i, s := range shardScrapes {
			if err := checkShardMetrics(s, i, total); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("controller series on shard 0 only", func(t *testing.T) {
		// The CRD-only server has no controllers; flux_distribution_info
		// is the controllers collector's series that it still reports.
		// The other shards do not run the collector at all, so that no
		// success series claims it worked there.
		for i, s := range shardScrapes {
			if _, has := s.fams["flux_distribution_info"]; has != (i == 0) {
				t.Errorf("shard %d: flux_distribution_info %v, want it on shard 0 only", i, has)
			}
			if _, has := s.value("flux_exporter_collector_success", map[string]string{"collector": "controllers"}); has != (i == 0) {
				t.Errorf("shard %d: controllers collector success series %v, want it on shard 0 only", i, has)
			}
			if !strings.Contains(shards[i].logs.String(), "The controllers collector runs on shard 0 only") != (i == 0) {
				t.Errorf("shard %d: logged whether it runs the controllers collector wrongly:\n%s", i, shards[i].logs)
			}
		}
	})
}

// statefulSet is the exporter's StatefulSet and its pods as the
// StatefulSet controller would make them; the full-mode server runs no
// controllers, so the test writes them.
type statefulSet struct {
	t         *testing.T
	kc        kubernetes.Interface
	namespace string
	sts       *appsv1.StatefulSet
}

func newStatefulSet(t *testing.T, kc kubernetes.Interface, namespace, name string, replicas int32) *statefulSet {
	t.Helper()
	ctx := t.Context()
	ensureServiceAccount(t, kc, namespace, name)
	sel := map[string]string{"app.kubernetes.io/name": name}
	sts, err := kc.AppsV1().StatefulSets(namespace).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, ServiceName: name, Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{ServiceAccountName: name,
				Containers: []corev1.Container{{Name: "flux-exporter", Image: "ghcr.io/flux-exporter/flux-exporter:test"}}}},
		},
	}, metaCreate)
	if err != nil {
		t.Fatal(err)
	}
	return &statefulSet{t: t, kc: kc, namespace: namespace, sts: sts}
}

// ensureServiceAccount creates the namespace, unless the server made it,
// and a ServiceAccount for pods: without a controller manager no default
// one exists, and admission wants the pod's.
func ensureServiceAccount(t *testing.T, kc kubernetes.Interface, namespace, name string) {
	t.Helper()
	ctx := t.Context()
	_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metaCreate)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metaCreate); err != nil {
		t.Fatal(err)
	}
}

// pod creates the pod of this ordinal, owned by the StatefulSet; with
// indexLabel it carries apps.kubernetes.io/pod-index as on Kubernetes 1.28
// and later, else only its name tells the ordinal.
func (s *statefulSet) pod(ordinal int, indexLabel bool) string {
	s.t.Helper()
	name := fmt.Sprintf("%s-%d", s.sts.Name, ordinal)
	l := maps.Clone(s.sts.Spec.Template.Labels)
	if indexLabel {
		l[kube.PodIndexLabel] = strconv.Itoa(ordinal)
	}
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace, Labels: l, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "StatefulSet", Name: s.sts.Name, UID: s.sts.UID, Controller: &yes, BlockOwnerDeletion: &yes,
		}}},
		Spec: s.sts.Spec.Template.Spec,
	}
	if _, err := s.kc.CoreV1().Pods(s.namespace).Create(s.t.Context(), pod, metaCreate); err != nil {
		s.t.Fatal(err)
	}
	return name
}

func (s *statefulSet) scale(replicas int32) {
	s.t.Helper()
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	if _, err := s.kc.AppsV1().StatefulSets(s.namespace).Patch(s.t.Context(), s.sts.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// TestShardsFromStatefulSet runs exporters with --pod and --pod-namespace
// as the chart's autosharding does: each takes its ordinal and the
// StatefulSet's replicas, and follows the replicas as they change, the
// objects moving to exactly the shards their UIDs hash to.
func TestShardsFromStatefulSet(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	opts := shardingFleet
	opts.Objects = 90
	f, err := fleet.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}
	uids := uidsOf(listFluxObjects(t, c))

	const ns = "monitoring"
	sts := newStatefulSet(t, kc, ns, "flux-exporter", 2)
	whole := startExporter(t, c.kubeconfig)
	var exporters []*exporter
	run := func(ordinal int) {
		// Ordinal 0 carries the pod-index label, the others only their name.
		pod := sts.pod(ordinal, ordinal == 0)
		e := startExporter(t, c.kubeconfig, "--pod="+pod, "--pod-namespace="+ns)
		e.waitReady()
		exporters = append(exporters, e)
	}
	run(0)
	run(1)
	whole.waitReady()
	wholeSeries := perObjectSeries(whole.scrape())

	// expect waits until the first n exporters report shard i of total
	// and split the fleet between them.
	expect := func(n, total int) {
		t.Helper()
		eventually(t, 60*time.Second, func() error {
			var scrapes []scrape
			for i, e := range exporters {
				s := e.scrape()
				if err := checkShardMetrics(s, i, total); err != nil {
					return fmt.Errorf("exporter of pod %d: %w", i, err)
				}
				if i < n {
					scrapes = append(scrapes, s)
				} else if objs := objectsOf(s); len(objs) != 0 {
					return fmt.Errorf("pod %d, past the %d replicas, still reports %d objects", i, total, len(objs))
				}
			}
			return checkPartition(scrapes, wholeSeries, uids)
		})
	}
	expect(2, 2)

	t.Run("scale up", func(t *testing.T) {
		sts.scale(3)
		run(2)
		expect(3, 3)
	})
	t.Run("scale down", func(t *testing.T) {
		// Pods 1 and 2 are terminating: they keep nothing, and pod 0 has
		// it all.
		sts.scale(1)
		expect(1, 1)
	})
	for _, e := range exporters {
		if !strings.Contains(e.logs.String(), "Resharded the Flux object caches") {
			t.Errorf("an exporter never logged its reshard:\n%s", e.logs)
		}
	}
}

// TestPodShardingErrors: --pod that names no pod, or a pod that no
// StatefulSet runs, stops the exporter with exit 1 and says why.
func TestPodShardingErrors(t *testing.T) {
	c := newCluster(t, apiserver.ModeFull)
	kc, err := kubernetes.NewForConfig(c.srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ensureServiceAccount(t, kc, "monitoring", "lone")
	lone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "lone", Namespace: "monitoring"},
		Spec: corev1.PodSpec{ServiceAccountName: "lone", Containers: []corev1.Container{{Name: "x", Image: "x"}}}}
	if _, err := kc.CoreV1().Pods("monitoring").Create(t.Context(), lone, metaCreate); err != nil {
		t.Fatal(err)
	}
	for pod, want := range map[string]string{
		"missing": `pods \"missing\" not found`,
		"lone":    "is not run by a StatefulSet",
	} {
		e := runExporter(t, "--kube.config="+c.kubeconfig, "--web.listen-address=127.0.0.1:0", "--pod="+pod, "--pod-namespace=monitoring")
		if code := e.wait(60 * time.Second); code != 1 || !strings.Contains(e.logs.String(), want) || !strings.Contains(e.logs.String(), "Cannot find this pod's shard") {
			t.Errorf("--pod=%s: exit %d, want 1 and a log naming %q:\n%s", pod, code, want, e.logs)
		}
	}
}
