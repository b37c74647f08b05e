package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// recordCollector emits the series of one decoded object, so that a table
// case is an object in and exposition text out.
type recordCollector struct {
	kind string
	rec  *Record
}

func (c recordCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c recordCollector) Collect(ch chan<- prometheus.Metric) {
	ms, _ := c.rec.metrics()
	for _, m := range ms {
		ch <- m
	}
}

// everyFamily turns on the opt-in families too: the decode tests check
// what each family says, whether or not it is on by default.
func everyFamily() DecoderOptions {
	f, err := NewMetricFilter(nil, nil, []string{"."})
	if err != nil {
		panic(err) // a constant list
	}
	return DecoderOptions{Filter: f}
}

func decodeYAML(t testing.TB, doc string) (string, *Record) {
	t.Helper()
	return decodeYAMLWith(t, everyFamily(), doc)
}

// decodeYAMLWith is decodeYAML with a Decoder of options o.
func decodeYAMLWith(t testing.TB, o DecoderOptions, doc string) (string, *Record) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("bad test object: %v", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	acc, errs := NewDecoder(o).Decode(kube.Kind{Kind: u.GetKind()}, u, nil)
	if len(errs) > 0 {
		t.Fatalf("decode faults: %v", errs)
	}
	return u.GetKind(), acc
}

const infoHeader = `# HELP flux_resource_info Information about a Flux object: readiness, suspension, the applied revision and where it comes from. Value is always 1.
# TYPE flux_resource_info gauge
`

// TestDecodeSaysWhatFluxSays holds one case per way the exporter once
// disagreed with Flux (issue 10): each object is what a real controller
// leaves in the API, and the want text is what flux get and the controller
// code say about it (docs/flux-semantics.md).
func TestDecodeSaysWhatFluxSays(t *testing.T) {
	cases := []struct {
		name     string
		object   string
		families []string
		want     string
	}{{
		name: "Alert v1beta3 has no status and is Ready, as flux get prints it",
		object: `
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: on-call, namespace: ops, uid: u1}
spec: {providerRef: {name: slack}, eventSources: [{kind: Kustomization, name: "*"}]}`,
		families: []string{"flux_resource_info", "flux_resource_condition"},
		want: infoHeader + `flux_resource_info{exported_namespace="ops",kind="Alert",name="on-call",path="",ready="True",reason="",ref="",revision="",source_name="",suspended="False",uid="u1",url=""} 1
`,
	}, {
		name: "Provider v1beta3 has no status and is Ready; its address is never a label",
		object: `
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {name: slack, namespace: ops, uid: u2}
spec: {type: slack, address: "https://hooks.slack.com/services/T0/B0/SECRETPATH"}`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="ops",kind="Provider",name="slack",path="",ready="True",reason="",ref="",revision="",source_name="",suspended="False",uid="u2",url=""} 1
`,
	}, {
		name: "OCI HelmRepository is static and Ready, even with a stale condition",
		object: `
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: apps, uid: u3}
spec: {type: oci, url: "oci://ghcr.io/org/charts"}
status:
  conditions: [{type: Ready, status: "False", reason: Failed, message: old, lastTransitionTime: "2025-01-01T00:00:00Z"}]`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="apps",kind="HelmRepository",name="charts",path="",ready="True",reason="",ref="",revision="",source_name="",suspended="False",uid="u3",url="oci://ghcr.io/org/charts"} 1
`,
	}, {
		name: "a never-reconciled object is not Ready, and has no condition series",
		object: `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: team, uid: u4, generation: 1}
spec: {interval: 10m, path: ./apps, sourceRef: {kind: GitRepository, name: repo}}
status: {observedGeneration: -1}`,
		families: []string{"flux_resource_info", "flux_resource_condition", "flux_resource_observed_generation", "flux_resource_unobserved_generation"},
		want: infoHeader + `flux_resource_info{exported_namespace="team",kind="Kustomization",name="apps",path="./apps",ready="False",reason="",ref="",revision="",source_name="repo",suspended="False",uid="u4",url=""} 1
# HELP flux_resource_observed_generation The generation of the last reconcile that ended well (status.observedGeneration); it stays behind while reconciles of a new spec fail. Whether the controller acts on the spec at all is flux_resource_unobserved_generation.
# TYPE flux_resource_observed_generation gauge
flux_resource_observed_generation{exported_namespace="team",kind="Kustomization",name="apps"} -1
# HELP flux_resource_unobserved_generation ` + unobservedGenerationFamily.help + `
# TYPE flux_resource_unobserved_generation gauge
flux_resource_unobserved_generation{exported_namespace="team",kind="Kustomization",name="apps",observed_generation=""} 1
`,
	}, {
		name: "a plain HelmRepository without status is waiting to be reconciled",
		object: `
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: bitnami, namespace: apps, uid: u5}
spec: {url: "https://charts.example.com"}`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="apps",kind="HelmRepository",name="bitnami",path="",ready="False",reason="",ref="",revision="",source_name="",suspended="False",uid="u5",url="https://charts.example.com"} 1
`,
	}, {
		name: "a generic Receiver's webhook path is its credential",
		object: `
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: push, namespace: ops, uid: u6}
spec: {type: generic, resources: [{kind: GitRepository, name: repo}], secretRef: {name: token}}
status:
  webhookPath: /hook/5f8a2f6e0c1b8d1f41c3c2b0b6a2d4e9f1a8c7d6e5b4a3c2d1e0f9a8b7c6d5e4
  conditions: [{type: Ready, status: "True", reason: Succeeded, message: "Receiver initialized for path: /hook/5f8a2f6e0c1b8d1f41c3c2b0b6a2d4e9f1a8c7d6e5b4a3c2d1e0f9a8b7c6d5e4"}]`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="ops",kind="Receiver",name="push",path="",ready="True",reason="Succeeded",ref="",revision="",source_name="",suspended="False",uid="u6",url="/hook/xxxxx"} 1
`,
	}, {
		name: "user info in a source URL is redacted, and a Git tag wins over semver",
		object: `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: infra, namespace: flux-system, uid: u7}
spec: {url: "https://deploy:glpat-s3cr3t@git.example.com/org/infra.git", ref: {branch: main, semver: ">=1.0.0", tag: v1.2.0}}`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="flux-system",kind="GitRepository",name="infra",path="",ready="False",reason="",ref="v1.2.0",revision="",source_name="",suspended="False",uid="u7",url="https://deploy:xxxxx@git.example.com/org/infra.git"} 1
`,
	}, {
		name: "a GitRepository without ref checks out master",
		object: `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: plain, namespace: flux-system, uid: u8}
spec: {url: "ssh://git@github.com/org/plain"}`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="flux-system",kind="GitRepository",name="plain",path="",ready="False",reason="",ref="master",revision="",source_name="",suspended="False",uid="u8",url="ssh://git@github.com/org/plain"} 1
`,
	}, {
		name: "an OCIRepository pulls the digest when both tag and digest are set",
		object: `
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: podinfo, namespace: apps, uid: u9}
spec:
  url: oci://ghcr.io/stefanprodan/manifests/podinfo
  ref: {tag: 6.7.0, digest: "sha256:daf61d2c2fdd120ff522536d4c6351309b4973bd24cad7cd47f3dfbd80c61bdc"}`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="apps",kind="OCIRepository",name="podinfo",path="",ready="False",reason="",ref="sha256:daf61d2c2fdd120ff522536d4c6351309b4973bd24cad7cd47f3dfbd80c61bdc",revision="",source_name="",suspended="False",uid="u9",url="oci://ghcr.io/stefanprodan/manifests/podinfo"} 1
`,
	}, {
		name: "each condition carries the generation it was set for",
		object: `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: team, uid: u10, generation: 5}
spec: {interval: 10m, path: ./apps, sourceRef: {kind: GitRepository, name: repo}}
status:
  observedGeneration: 4
  conditions:
  - {type: Ready, status: "False", reason: BuildFailed, message: "kustomize build failed", observedGeneration: 5, lastTransitionTime: "2026-09-10T08:15:02Z"}`,
		families: []string{"flux_resource_condition_observed_generation", "flux_resource_generation", "flux_resource_observed_generation", "flux_resource_unobserved_generation"},
		want: `# HELP flux_resource_condition_observed_generation ` + conditionGenerationFamily.help + `
# TYPE flux_resource_condition_observed_generation gauge
flux_resource_condition_observed_generation{exported_namespace="team",kind="Kustomization",name="apps",type="Ready"} 5
# HELP flux_resource_generation The object's metadata.generation; it increases on every spec change.
# TYPE flux_resource_generation gauge
flux_resource_generation{exported_namespace="team",kind="Kustomization",name="apps"} 5
# HELP flux_resource_observed_generation The generation of the last reconcile that ended well (status.observedGeneration); it stays behind while reconciles of a new spec fail. Whether the controller acts on the spec at all is flux_resource_unobserved_generation.
# TYPE flux_resource_observed_generation gauge
flux_resource_observed_generation{exported_namespace="team",kind="Kustomization",name="apps"} 4
`,
	}, {
		name: "a HelmRelease whose first install failed shows the attempted chart version",
		object: `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: apps, uid: u11, generation: 1}
spec: {interval: 10m, chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}}}
status:
  lastAttemptedRevision: 6.7.1
  failures: 1
  installFailures: 1
  conditions: [{type: Ready, status: "False", reason: InstallFailed, message: "install failed", observedGeneration: 1}]`,
		families: []string{"flux_resource_info"},
		want: infoHeader + `flux_resource_info{exported_namespace="apps",kind="HelmRelease",name="podinfo",path="",ready="False",reason="InstallFailed",ref="",revision="6.7.1",source_name="podinfo",suspended="False",uid="u11",url=""} 1
`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kind, rec := decodeYAML(t, tc.object)
			c := recordCollector{kind: kind, rec: rec}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), tc.families...); err != nil {
				t.Error(err)
			}
			if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", err, problems)
			}
		})
	}
}

// TestUnobservedGeneration holds flux_resource_unobserved_generation to
// docs/flux-semantics.md rule 2: a series, valued metadata.generation and
// labelled with Ready's observedGeneration, only while no controller has
// written Ready for the current generation, or for an object never
// reconciled that flux get reports not ready.
func TestUnobservedGeneration(t *testing.T) {
	cases := []struct {
		name, object string
		want         float64 // -1: no series
		observed     string
	}{
		{"Ready written for an older generation: the spec was not acted on", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, generation: 4}
status:
  observedGeneration: 3
  conditions: [{type: Ready, status: "True", reason: ReconciliationSucceeded, observedGeneration: 3}]`, 4, "3"},
		{"a failed reconcile of the current spec (issue 10, input 5): acted on", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, generation: 5}
status:
  observedGeneration: 4
  conditions: [{type: Ready, status: "False", reason: BuildFailed, observedGeneration: 5}]`, -1, ""},
		{"Ready=Unknown at the start of an attempt on the current spec: acted on", `
kind: HelmRelease
metadata: {name: a, namespace: apps, uid: u, generation: 2}
status:
  conditions: [{type: Ready, status: "Unknown", reason: Progressing, observedGeneration: 2}]`, -1, ""},
		{"never reconciled: no Ready, and flux get says not ready", `
kind: HelmRelease
metadata: {name: a, namespace: apps, uid: u, generation: 1}
status: {observedGeneration: -1}`, 1, ""},
		{"an Alert never gets a status and is ready as flux get prints it", `
kind: Alert
metadata: {name: a, namespace: apps, uid: u, generation: 3}`, -1, ""},
		{"a Ready without observedGeneration says nothing", `
kind: FluxInstance
metadata: {name: a, namespace: apps, uid: u, generation: 7}
status:
  conditions: [{type: Ready, status: "True", reason: ReconciliationSucceeded}]`, -1, ""},
		{"suspended with an unobserved spec: still not acted on (the rules leave it out)", `
kind: Kustomization
metadata: {name: a, namespace: apps, uid: u, generation: 7}
spec: {suspend: true}
status:
  conditions: [{type: Ready, status: "True", reason: ReconciliationSucceeded, observedGeneration: 5}]`, 7, "5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, rec := decodeYAML(t, c.object)
			got, ok := seriesValue(t, rec, unobservedGenerationFamily)
			if c.want < 0 {
				if ok {
					t.Fatalf("got %v, want no series", got)
				}
				return
			}
			if !ok || got != c.want {
				t.Fatalf("got %v (present %v), want %v", got, ok, c.want)
			}
			text := seriesText(rec, unobservedGenerationFamily)
			if want := `observed_generation="` + c.observed + `"`; !strings.Contains(text, want) {
				t.Fatalf("series %q lacks %s", text, want)
			}
		})
	}
}

// seriesText is the name and labels of the record's first series of
// family f.
func seriesText(rec *Record, f *family) string {
	start := uint32(0)
	for i, s := range rec.series {
		if int(s.family) == f.id {
			return string(rec.appendSeries(nil, i, start))
		}
		start = s.end
	}
	return ""
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"https://github.com/org/repo", "https://github.com/org/repo"},
		{"https://deploy:glpat-s3cr3t@git.example.com/org/infra.git", "https://deploy:xxxxx@git.example.com/org/infra.git"},
		// A bare user name over http(s) is how hosting tokens are written.
		{"https://ghp_s3cr3t@github.com/org/repo", "https://xxxxx@github.com/org/repo"},
		{"ssh://git@github.com/org/repo", "ssh://git@github.com/org/repo"},
		{"ssh://git:s3cr3t@github.com/org/repo", "ssh://git:xxxxx@github.com/org/repo"},
		{"https://charts.example.com/index.yaml?token=s3cr3t&v=2", "https://charts.example.com/index.yaml?token=xxxxx&v=xxxxx"},
		{"https://acct.blob.core.windows.net/c?sv=2024&sig=s3cr3t%2Bx", "https://acct.blob.core.windows.net/c?sig=xxxxx&sv=xxxxx"},
		{"https://example.com/p#access_token=s3cr3t", "https://example.com/p#xxxxx"},
		{"minio.example.com:9000", "minio.example.com:9000"},
		{"key:s3cr3t@minio.example.com:9000", "key:xxxxx@minio.example.com:9000"},
		{"ghcr.io/org/app", "ghcr.io/org/app"},
		{"oci://ghcr.io/org/charts", "oci://ghcr.io/org/charts"},
		// Unparseable: nothing of it can be shown safe.
		{"https://s3cr3t@exa mple.com:port/", "xxxxx"},
	} {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(redactURL(tc.in), "s3cr3t") {
			t.Errorf("redactURL(%q) leaks the secret", tc.in)
		}
	}
}
