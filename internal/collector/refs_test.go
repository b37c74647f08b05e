package collector

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// TestReadRefs holds one case per rule of docs/flux-semantics.md,
// "References between objects": the field, its namespace default, its
// kind default, and what names no object.
func TestReadRefs(t *testing.T) {
	cases := []struct {
		name   string
		object string
		want   []ref
		ready  bool
	}{{
		name: "Kustomization: dependsOn in its own namespace unless named, sourceRef likewise, a repeated reference once",
		object: `
kind: Kustomization
metadata: {name: apps, namespace: team}
spec:
  dependsOn: [{name: crds}, {name: infra, namespace: flux-system, readyExpr: "true"}, {name: crds}]
  sourceRef: {kind: GitRepository, name: fleet, namespace: flux-system}
status: {conditions: [{type: Ready, status: "False", reason: DependencyNotReady}]}`,
		want: []ref{
			{"Kustomization", "team", "crds", relDependsOn},
			{"Kustomization", "flux-system", "infra", relDependsOn},
			{"GitRepository", "flux-system", "fleet", relSource},
		},
	}, {
		name: "HelmRelease from a chart template: the template's source and the HelmChart helm-controller made",
		object: `
kind: HelmRelease
metadata: {name: redis, namespace: apps}
spec:
  dependsOn: [{name: cert-manager, namespace: infra}]
  chart: {spec: {chart: redis, sourceRef: {kind: HelmRepository, name: bitnami, namespace: flux-system}}}
status:
  helmChart: flux-system/apps-redis
  conditions: [{type: Ready, status: "True", reason: UpgradeSucceeded}]`,
		want: []ref{
			{"HelmRelease", "infra", "cert-manager", relDependsOn},
			{"HelmRepository", "flux-system", "bitnami", relSource},
			{"HelmChart", "flux-system", "apps-redis", relChart},
		},
		ready: true,
	}, {
		name: "HelmRelease with chartRef, in its own namespace",
		object: `
kind: HelmRelease
metadata: {name: podinfo, namespace: apps}
spec: {chartRef: {kind: OCIRepository, name: podinfo}}`,
		want: []ref{{"OCIRepository", "apps", "podinfo", relChart}},
	}, {
		name: "HelmChart's sourceRef is local: a namespace field is not the API's and is ignored",
		object: `
kind: HelmChart
metadata: {name: apps-redis, namespace: flux-system}
spec: {chart: redis, sourceRef: {kind: HelmRepository, name: bitnami, namespace: elsewhere}}`,
		want: []ref{{"HelmRepository", "flux-system", "bitnami", relSource}},
	}, {
		name: "GitRepository includes other GitRepositories of its namespace",
		object: `
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec: {url: "https://github.com/acme/fleet", include: [{repository: {name: common}, toPath: lib}, {fromPath: x}]}`,
		want: []ref{{"GitRepository", "flux-system", "common", relInclude}},
	}, {
		name: "ImagePolicy reads an ImageRepository, in another namespace when it says so",
		object: `
kind: ImagePolicy
metadata: {name: podinfo, namespace: apps}
spec: {imageRepositoryRef: {name: podinfo, namespace: images}}`,
		want: []ref{{"ImageRepository", "images", "podinfo", relImageRepository}},
	}, {
		name: "ImageUpdateAutomation's sourceRef kind defaults to GitRepository",
		object: `
kind: ImageUpdateAutomation
metadata: {name: bump, namespace: flux-system}
spec: {sourceRef: {name: fleet}}`,
		want: []ref{{"GitRepository", "flux-system", "fleet", relSource}},
	}, {
		name: "Alert: its Provider, and event sources that name one object; * names none",
		object: `
kind: Alert
metadata: {name: on-call, namespace: ops}
spec:
  providerRef: {name: slack}
  eventSources:
    - {kind: Kustomization, name: "*"}
    - {kind: GitRepository, name: "*", matchLabels: {team: a}}
    - {kind: HelmRelease, name: redis, namespace: apps}
    - {kind: Kustomization, name: ops}`,
		want: []ref{
			{"Provider", "ops", "slack", relProvider},
			{"HelmRelease", "apps", "redis", relEventSource},
			{"Kustomization", "ops", "ops", relEventSource},
		},
		ready: true, // static
	}, {
		name: "Receiver lists the objects it asks to reconcile",
		object: `
kind: Receiver
metadata: {name: push, namespace: flux-system}
spec: {resources: [{kind: GitRepository, name: fleet}, {kind: OCIRepository, name: "*"}]}`,
		want: []ref{{"GitRepository", "flux-system", "fleet", relResource}},
	}, {
		name: "ExternalArtifact names its producer",
		object: `
kind: ExternalArtifact
metadata: {name: app, namespace: apps}
spec: {sourceRef: {apiVersion: source.extensions.fluxcd.io/v1beta1, kind: ArtifactGenerator, name: app-gen}}`,
		want: []ref{{"ArtifactGenerator", "apps", "app-gen", relSource}},
	}, {
		name: "status.helmChart without a namespace is in the HelmRelease's",
		object: `
kind: HelmRelease
metadata: {name: x, namespace: apps}
spec: {chart: {spec: {chart: x, sourceRef: {kind: HelmRepository, name: charts}}}}
status: {helmChart: apps-x}`,
		want: []ref{{"HelmRepository", "apps", "charts", relSource}, {"HelmChart", "apps", "apps-x", relChart}},
	}, {
		name: "status.helmChart left behind after spec.chartRef replaced spec.chart is no reference",
		object: `
kind: HelmRelease
metadata: {name: x, namespace: apps}
spec: {chartRef: {kind: OCIRepository, name: x}}
status: {helmChart: apps/apps-x}`,
		want: []ref{{"OCIRepository", "apps", "x", relChart}},
	}, {
		name: "ResourceSet: dependsOn of any kind, and input providers by name only",
		object: `
kind: ResourceSet
metadata: {name: tenants, namespace: flux-system}
spec:
  dependsOn:
  - {apiVersion: kustomize.toolkit.fluxcd.io/v1, kind: Kustomization, name: infra, ready: true}
  - {apiVersion: apps/v1, kind: Deployment, name: ingress, namespace: ingress-system}
  inputsFrom:
  - {kind: ResourceSetInputProvider, name: github-prs}
  - {selector: {matchLabels: {team: a}}}`,
		want: []ref{
			{"Kustomization", "flux-system", "infra", relDependsOn},
			{"Deployment", "ingress-system", "ingress", relDependsOn},
			{"ResourceSetInputProvider", "flux-system", "github-prs", relInputProvider},
		},
	}, {
		name: "A kind without references in the table has none",
		object: `
kind: Bucket
metadata: {name: b, namespace: apps}
spec: {sourceRef: {kind: GitRepository, name: x}}`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, rec := decodeYAML(t, c.object)
			if !slices.Equal(rec.refs, c.want) {
				t.Errorf("refs\n%v\nwant\n%v", rec.refs, c.want)
			}
			if rec.ready != c.ready {
				t.Errorf("ready %v, want %v", rec.ready, c.ready)
			}
			// One dependency_info series per reference, from the same bytes.
			got := testutil.CollectAndCount(recordCollector{rec: rec}, "flux_resource_dependency_info")
			if got != len(c.want) {
				t.Errorf("%d flux_resource_dependency_info series, want %d", got, len(c.want))
			}
		})
	}
}

func TestReadRefsExposition(t *testing.T) {
	_, rec := decodeYAML(t, `
kind: Kustomization
metadata: {name: apps, namespace: team}
spec:
  dependsOn: [{name: crds}]
  sourceRef: {kind: OCIRepository, name: manifests, namespace: flux-system}`)
	want := `# HELP flux_resource_dependency_info ` + dependencyInfoFamily.help + `
# TYPE flux_resource_dependency_info gauge
flux_resource_dependency_info{dependency_kind="Kustomization",dependency_name="crds",dependency_namespace="team",exported_namespace="team",kind="Kustomization",name="apps",relation="depends_on"} 1
flux_resource_dependency_info{dependency_kind="OCIRepository",dependency_name="manifests",dependency_namespace="flux-system",exported_namespace="team",kind="Kustomization",name="apps",relation="source"} 1
`
	if err := testutil.CollectAndCompare(recordCollector{rec: rec}, strings.NewReader(want), "flux_resource_dependency_info"); err != nil {
		t.Error(err)
	}
	for _, f := range exportedFormats {
		if err := sameAsClientGolang([]*Record{rec}, f); err != nil {
			t.Error(err)
		}
	}
}

// TestReadRefsFaults: a reference of the wrong shape costs that reference
// and is counted; the rest of the object is read.
func TestReadRefsFaults(t *testing.T) {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(`
kind: Kustomization
metadata: {name: apps, namespace: team}
spec:
  dependsOn: "crds"
  sourceRef: [GitRepository, fleet]`), &obj); err != nil {
		t.Fatal(err)
	}
	acc, errs := NewDecoder(everyFamily()).Decode(kube.Kind{Kind: "Kustomization"}, &unstructured.Unstructured{Object: obj}, nil)
	rec := acc
	if len(rec.refs) != 0 {
		t.Errorf("refs %v, want none", rec.refs)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	for _, want := range []string{"spec.dependsOn: want list", "spec.sourceRef: want object"} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, want) }) {
			t.Errorf("faults %q lack %q", msgs, want)
		}
	}
	if testutil.CollectAndCount(recordCollector{rec: rec}, "flux_resource_info") != 1 {
		t.Error("the object's other series are gone")
	}
}

// TestRefTableKnowsItsKinds keeps the table to kinds and relations that
// exist: every referring kind is one the exporter reads, and every
// relation is in docs/flux-semantics.md's words.
func TestRefTableKnowsItsKinds(t *testing.T) {
	for kind, specs := range refSpecs {
		if _, ok := kinds[kind]; !ok && kind != "ExternalArtifact" {
			t.Errorf("%s has references but no entry in the kind table", kind)
		}
		for _, s := range specs {
			if s.kind == "" && s.joined {
				t.Errorf("%s %s: a joined reference needs a kind", kind, s.path)
			}
			if int(s.relation) >= len(relations) || relations[s.relation].name == "" {
				t.Errorf("%s %s: unnamed relation %d", kind, s.path, s.relation)
			}
		}
	}
}
