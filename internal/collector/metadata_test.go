package collector

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// uncheckedRecords sends the records' series as the scrape collector does:
// it describes nothing, so the registry accepts a family whose series
// differ in label names.
type uncheckedRecords []*Record

func (uncheckedRecords) Describe(chan<- *prometheus.Desc)      {}
func (c uncheckedRecords) Collect(ch chan<- prometheus.Metric) { recordsCollector(c).Collect(ch) }

// decodeKind decodes a YAML object as the watcher would for kind k, which
// carries the group, version and resource the object's apiVersion and
// kind do not.
func decodeKind(t testing.TB, k kube.Kind, doc string) *Record {
	t.Helper()
	return decodeKindWith(t, everyFamily(), k, doc)
}

// decodeKindWith decodes a YAML object with a Decoder of options o.
func decodeKindWith(t testing.TB, o DecoderOptions, k kube.Kind, doc string) *Record {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("bad test object: %v", err)
	}
	acc, errs := NewDecoder(o).Decode(k, &unstructured.Unstructured{Object: obj}, nil)
	if len(errs) > 0 {
		t.Fatalf("decode faults: %v", errs)
	}
	return acc
}

var (
	kustomizations = kube.Kind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization", Resource: "kustomizations"}
	helmReleases   = kube.Kind{Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease", Resource: "helmreleases"}
	gitRepos       = kube.Kind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository", Resource: "gitrepositories"}
	alerts         = kube.Kind{Group: "notification.toolkit.fluxcd.io", Version: "v1beta3", Kind: "Alert", Resource: "alerts"}
	receivers      = kube.Kind{Group: "notification.toolkit.fluxcd.io", Version: "v1", Kind: "Receiver", Resource: "receivers"}
	fluxInstances  = kube.Kind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstance", Resource: "fluxinstances"}
	resourceSets   = kube.Kind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "ResourceSet", Resource: "resourcesets"}
	fluxReports    = kube.Kind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxReport", Resource: "fluxreports"}
)

func TestParseMetadataAllowlist(t *testing.T) {
	for _, tc := range []struct {
		value    string
		keys     map[string][]string
		wildcard bool
		warn     string
	}{
		{value: "", keys: nil},
		{value: "kustomizations=[team]", keys: map[string][]string{"kustomizations": {"team"}}},
		{value: " kustomizations = [ team , app.kubernetes.io/part-of ] , helmreleases=[]",
			keys: map[string][]string{"kustomizations": {"team", "app.kubernetes.io/part-of"}, "helmreleases": {}}},
		{value: "*=[*]", keys: map[string][]string{"*": {"*"}}, wildcard: true},
		{value: "gitrepositories=[team.example.com/*]", keys: map[string][]string{"gitrepositories": {"team.example.com/*"}}},
		// kube-state-metrics: * under resources overrides the others.
		{value: "kustomizations=[team,app],*=[team]", keys: map[string][]string{"kustomizations": {"team", "app"}, "*": {"team"}}, wildcard: true,
			warn: "*=[...] applies to every kind and overrides kustomizations"},
		{value: "kustomizations=[team,*]", keys: map[string][]string{"kustomizations": {"team", "*"}}, warn: "only as the first key"},
		{value: "kustomizations=[a],kustomizations=[b]", keys: map[string][]string{"kustomizations": {"b"}}, warn: "given twice"},
	} {
		a, warnings, err := ParseMetadataAllowlist("--metric-labels-allowlist", tc.value)
		if err != nil {
			t.Errorf("%q: %v", tc.value, err)
			continue
		}
		var keys map[string][]string
		var wildcard bool
		if a != nil {
			keys, wildcard = a.keys, a.wildcard
		}
		if !reflect.DeepEqual(keys, tc.keys) || wildcard != tc.wildcard {
			t.Errorf("%q: keys %v wildcard %v, want %v %v", tc.value, keys, wildcard, tc.keys, tc.wildcard)
		}
		if got := strings.Join(warnings, "\n"); tc.warn == "" && got != "" || !strings.Contains(got, tc.warn) {
			t.Errorf("%q: warnings %q, want one saying %q", tc.value, got, tc.warn)
		}
	}
	for value, why := range map[string]string{
		"kustomizations":                        "has no =[...]",
		"kustomizations=team":                   "must be in brackets",
		"kustomizations=[team":                  "no closing ]",
		"kustomizations=[team]helmreleases=[a]": "without a comma",
		"kustomizations=[team],":                "ends with a comma",
		"kustomizations=[team,,app]":            "empty key",
		"kustomizations=[team,]":                "empty key",
		"=[team]":                               "no resource",
		"Kustomization=[team]":                  "is a kind",
		"kustomization=[team]":                  "is a kind",
		"Kustomizations=[team]":                 "not a resource name",
		"kustomizations=[a/*-b-*]":              "more than one *",
		"kustomizations=[a=b]":                  "which a key cannot",
		"helmreleases=[kubectl.kubernetes.io/last-applied-configuration]": "never exported",
	} {
		_, _, err := ParseMetadataAllowlist("--metric-labels-allowlist", value)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.HasPrefix(err.Error(), "--metric-labels-allowlist=") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v; want one line naming the flag and saying %q", value, err, why)
		}
	}
}

func TestSanitizeLabelName(t *testing.T) {
	for key, want := range map[string]string{
		"team":                      "team",
		"app.kubernetes.io/part-of": "app_kubernetes_io_part_of",
		"teamName":                  "team_name",
		"TeamName":                  "team_name",
		"ABC":                       "abc",
		"a1B":                       "a1_b",
		"my__Key":                   "my__key",
		"x-Y":                       "x_y",
		"ünï":                       "_n_",
	} {
		if got := sanitizeLabelName(key); got != want {
			t.Errorf("sanitizeLabelName(%q) = %q, want %q", key, got, want)
		}
	}
}

// TestMetadataLabelsCollisions: keys that sanitize to one name are all
// renamed with _conflictN in key order, and a generated name skips one
// another key sanitized to (a.b_conflict1 keeps label_a_b_conflict1).
func TestMetadataLabelsCollisions(t *testing.T) {
	got := metadataLabels("label", map[string]string{
		"team_a": "3", "team-a": "1", "team.a": "2", "other": "x",
		"a-b": "p", "a_b": "q", "a.b_conflict1": "r",
	})
	want := []labelPair{
		{"label_a_b_conflict1", "r"}, {"label_a_b_conflict2", "p"}, {"label_a_b_conflict3", "q"},
		{"label_other", "x"},
		{"label_team_a_conflict1", "1"}, {"label_team_a_conflict2", "2"}, {"label_team_a_conflict3", "3"},
	}
	if !reflect.DeepEqual(sortedPairs(got), want) {
		t.Errorf("got %v\nwant %v", sortedPairs(got), want)
	}
}

func sortedPairs(p []labelPair) []labelPair {
	out := append([]labelPair{}, p...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].name < out[i].name {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

const labelledKustomization = `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
  namespace: team-a
  uid: u1
  labels: {team: payments, app.kubernetes.io/part-of: shop, teamName: pay, team-name: pay2}
  annotations: {team.example.com/owner: alice, team.example.com/pager: "555", note: "x", kubectl.kubernetes.io/last-applied-configuration: '{"spec":{"values":{"password":"hunter2"}}}'}
spec: {interval: 10m, path: ./apps, sourceRef: {kind: GitRepository, name: repo}}
`

const labelledRepo = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: repo, namespace: team-a, uid: u2, labels: {team: payments}}
spec: {interval: 1m, url: https://example.com/repo.git}
`

// TestResourceLabels decodes objects with allowlists set and checks the
// families through the oracle with a pedantic registry, the lint, and the
// writer against client_golang's encoder.
func TestResourceLabels(t *testing.T) {
	var opts DecoderOptions
	set := func(labels, annotations string) {
		t.Helper()
		l, _, err := ParseMetadataAllowlist("--metric-labels-allowlist", labels)
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := ParseMetadataAllowlist("--metric-annotations-allowlist", annotations)
		if err != nil {
			t.Fatal(err)
		}
		opts = DecoderOptions{Labels: l, Annotations: a}
	}
	const (
		labelsHeader = "# HELP flux_resource_labels " + "Kubernetes labels of a Flux object as Prometheus labels: for each key --metric-labels-allowlist selects for its kind (resource), label_ and the key, sanitized as kube-state-metrics sanitizes it. Emitted only for kinds the allowlist names. Value is always 1.\n# TYPE flux_resource_labels gauge\n"
		annotsHeader = "# HELP flux_resource_annotations " + "Kubernetes annotations of a Flux object as Prometheus labels: for each key --metric-annotations-allowlist selects for its kind (resource), annotation_ and the key, sanitized as kube-state-metrics sanitizes it. Emitted only for kinds the allowlist names. Value is always 1.\n# TYPE flux_resource_annotations gauge\n"
	)
	for _, tc := range []struct {
		name, labels, annotations, want string
	}{{
		name: "nothing by default",
	}, {
		name:   "one kind, two keys; the other kind gets nothing",
		labels: "kustomizations=[team,app.kubernetes.io/part-of]",
		want: labelsHeader + `flux_resource_labels{exported_namespace="team-a",kind="Kustomization",label_app_kubernetes_io_part_of="shop",label_team="payments",name="apps"} 1
`,
	}, {
		name:   "every kind, a key some objects lack",
		labels: "*=[team,tier]",
		want: labelsHeader + `flux_resource_labels{exported_namespace="team-a",kind="Kustomization",label_team="payments",name="apps"} 1
flux_resource_labels{exported_namespace="team-a",kind="GitRepository",label_team="payments",name="repo"} 1
`,
	}, {
		name:   "an empty list exports nothing for the kind",
		labels: "kustomizations=[],gitrepositories=[team]",
		want: labelsHeader + `flux_resource_labels{exported_namespace="team-a",kind="GitRepository",label_team="payments",name="repo"} 1
`,
	}, {
		name:   "every label, colliding names renamed",
		labels: "kustomizations=[*]",
		want: labelsHeader + `flux_resource_labels{exported_namespace="team-a",kind="Kustomization",label_app_kubernetes_io_part_of="shop",label_team="payments",label_team_name_conflict1="pay2",label_team_name_conflict2="pay",name="apps"} 1
`,
	}, {
		name:        "every annotation but kubectl's last applied object",
		annotations: "*=[*]",
		want: annotsHeader + `flux_resource_annotations{annotation_note="x",annotation_team_example_com_owner="alice",annotation_team_example_com_pager="555",exported_namespace="team-a",kind="Kustomization",name="apps"} 1
flux_resource_annotations{exported_namespace="team-a",kind="GitRepository",name="repo"} 1
`,
	}, {
		name:        "a partial wildcard does not select it either",
		annotations: "kustomizations=[kubectl.kubernetes.io/*]",
		want: annotsHeader + `flux_resource_annotations{exported_namespace="team-a",kind="Kustomization",name="apps"} 1
`,
	}, {
		name:        "annotations by a partial wildcard",
		annotations: "kustomizations=[team.example.com/*]",
		want: annotsHeader + `flux_resource_annotations{annotation_team_example_com_owner="alice",annotation_team_example_com_pager="555",exported_namespace="team-a",kind="Kustomization",name="apps"} 1
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			set(tc.labels, tc.annotations)
			records := []*Record{decodeKindWith(t, opts, kustomizations, labelledKustomization), decodeKindWith(t, opts, gitRepos, labelledRepo)}
			c := uncheckedRecords(records)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), "flux_resource_labels", "flux_resource_annotations"); err != nil {
				t.Error(err)
			}
			if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", err, problems)
			}
			for _, f := range exportedFormats {
				if err := sameAsCollected(c, records, f); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestMetadataFamiliesHonourTheFilter: a denied family is not rendered.
func TestMetadataFamiliesHonourTheFilter(t *testing.T) {
	l, _, _ := ParseMetadataAllowlist("--metric-labels-allowlist", "*=[*]")
	deny, err := NewMetricFilter(nil, []string{"^flux_resource_labels$"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := decodeKindWith(t, DecoderOptions{Labels: l, Filter: deny}, kustomizations, labelledKustomization)
	for _, s := range rec.series {
		if families[s.family] == labelsFamily {
			t.Fatal("flux_resource_labels rendered while the filter denies it")
		}
	}
}
