package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

const gotkHeader = "# HELP gotk_resource_info The current state of a Flux resource, with the labels of the kube-state-metrics configuration in fluxcd/flux2-monitoring-example, for its dashboards (--compat.gotk-resource-info; labels per kind in docs/compat.md). Value is always 1.\n# TYPE gotk_resource_info gauge\n"

// TestGotkResourceInfo checks the labels kube-state-metrics writes with the
// upstream configuration, kind by kind: absent fields leave their label
// out, suspended is spec.suspend spelt true or false, Alert and Provider
// have no ready label, and credentials are redacted.
func TestGotkResourceInfo(t *testing.T) {
	on := DecoderOptions{GotkResourceInfo: true}
	cases := []struct {
		kind kube.Kind
		doc  string
		want string
	}{{
		kustomizations, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: team-a, uid: u1}
spec: {interval: 10m, path: ./apps, sourceRef: {kind: GitRepository, name: repo}}
status:
  lastAppliedRevision: main@sha1:abc
  conditions: [{type: Ready, status: "True", reason: ReconciliationSucceeded, lastTransitionTime: "2026-01-01T00:00:00Z"}]`,
		`gotk_resource_info{customresource_group="kustomize.toolkit.fluxcd.io",customresource_kind="Kustomization",customresource_version="v1",exported_namespace="team-a",name="apps",ready="True",revision="main@sha1:abc",source_name="repo"} 1
`,
	}, {
		helmReleases, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: apps, uid: u2}
spec: {suspend: true, interval: 1h, chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: charts}}}}
status:
  history: [{chartName: podinfo, chartVersion: 6.7.1, appVersion: 6.7.1, status: deployed, version: 2}]
  conditions: [{type: Ready, status: "False", reason: UpgradeFailed, lastTransitionTime: "2026-01-01T00:00:00Z"}]`,
		`gotk_resource_info{chart_app_version="6.7.1",chart_name="podinfo",chart_source_name="charts",customresource_group="helm.toolkit.fluxcd.io",customresource_kind="HelmRelease",customresource_version="v2",exported_namespace="apps",name="podinfo",ready="False",revision="6.7.1",suspended="true"} 1
`,
	}, {
		gitRepos, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: repo, namespace: team-a, uid: u3}
spec: {suspend: false, interval: 1m, url: "https://deploy:s3cret@git.example.com/repo.git"}`,
		`gotk_resource_info{customresource_group="source.toolkit.fluxcd.io",customresource_kind="GitRepository",customresource_version="v1",exported_namespace="team-a",name="repo",suspended="false",url="https://deploy:xxxxx@git.example.com/repo.git"} 1
`,
	}, {
		alerts, `
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {name: on-call, namespace: ops, uid: u4}
spec: {providerRef: {name: slack}, eventSources: [{kind: Kustomization, name: "*"}]}`,
		`gotk_resource_info{customresource_group="notification.toolkit.fluxcd.io",customresource_kind="Alert",customresource_version="v1beta3",exported_namespace="ops",name="on-call"} 1
`,
	}, {
		receivers, `
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: push, namespace: ops, uid: u5}
spec: {type: generic, resources: [{kind: GitRepository, name: repo}], secretRef: {name: token}}
status:
  webhookPath: /hook/0123456789abcdef
  conditions: [{type: Ready, status: "True", reason: Succeeded, lastTransitionTime: "2026-01-01T00:00:00Z"}]`,
		`gotk_resource_info{customresource_group="notification.toolkit.fluxcd.io",customresource_kind="Receiver",customresource_version="v1",exported_namespace="ops",name="push",ready="True",webhook_path="/hook/xxxxx"} 1
`,
	}, {
		// Not in the upstream configuration: no series.
		fluxInstances, `
apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata: {name: flux, namespace: flux-system, uid: u6}
spec: {distribution: {version: 2.x, registry: ghcr.io/fluxcd}}`,
		``,
	}}
	var records []*Record
	for _, tc := range cases {
		rec := decodeKindWith(t, on, tc.kind, tc.doc)
		records = append(records, rec)
		want := ""
		if tc.want != "" {
			want = gotkHeader + tc.want
		}
		if err := testutil.CollectAndCompare(uncheckedRecords{rec}, strings.NewReader(want), "gotk_resource_info"); err != nil {
			t.Errorf("%s: %v", tc.kind.Kind, err)
		}
	}
	c := uncheckedRecords(records)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	for _, f := range exportedFormats {
		if err := sameAsCollected(c, records, f); err != nil {
			t.Error(err)
		}
	}
}

// TestGotkResourceInfoOffAndFiltered: off by default, and dropped by the
// metric filter when on.
func TestGotkResourceInfoOffAndFiltered(t *testing.T) {
	const doc = `{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"a","namespace":"b"}}`
	has := func(rec *Record) bool {
		for _, s := range rec.series {
			if families[s.family] == gotkResourceInfoFamily {
				return true
			}
		}
		return false
	}
	if has(decodeKind(t, kustomizations, doc)) {
		t.Error("gotk_resource_info rendered without --compat.gotk-resource-info")
	}
	if !has(decodeKindWith(t, DecoderOptions{GotkResourceInfo: true}, kustomizations, doc)) {
		t.Error("gotk_resource_info not rendered with --compat.gotk-resource-info")
	}
	deny, err := NewMetricFilter(nil, []string{"^gotk_"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if has(decodeKindWith(t, DecoderOptions{GotkResourceInfo: true, Filter: deny}, kustomizations, doc)) {
		t.Error("gotk_resource_info rendered while the filter denies it")
	}
}

// TestOperatorKinds: the Flux Operator's kinds are paused by annotation,
// and FluxInstance, ResourceSet and FluxReport get their families.
func TestOperatorKinds(t *testing.T) {
	instance := decodeKind(t, fluxInstances, `
apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata: {name: flux, namespace: flux-system, uid: u1, annotations: {fluxcd.controlplane.io/reconcile: disabled}}
spec:
  distribution: {version: 2.x, registry: ghcr.io/fluxcd}
  sync: {kind: GitRepository, url: "https://token@github.com/org/fleet.git", ref: refs/heads/main, path: clusters/prod}
status:
  lastAppliedRevision: v2.7.3@sha256:abc
  conditions: [{type: Ready, status: "True", reason: ReconciliationSucceeded, lastTransitionTime: "2026-01-01T00:00:00Z"}]`)
	set := decodeKind(t, resourceSets, `
apiVersion: fluxcd.controlplane.io/v1
kind: ResourceSet
metadata: {name: tenants, namespace: flux-system, uid: u2}
status:
  inventory: {entries: [{id: _a__Namespace, v: v1}, {id: _b__Namespace, v: v1}]}
  conditions: [{type: Ready, status: "False", reason: BuildFailed, lastTransitionTime: "2026-01-01T00:00:00Z"}]`)
	report := decodeKind(t, fluxReports, `
apiVersion: fluxcd.controlplane.io/v1
kind: FluxReport
metadata: {name: flux, namespace: flux-system, uid: u3}
spec: {distribution: {version: v2.7.3, status: Installed, managedBy: flux-operator, entitlement: Issued by controlplane}}`)
	want := `# HELP flux_instance_info The Flux distribution a FluxInstance installs: the registry of its images (spec.distribution.registry), the version range asked for (spec.distribution.version) and the revision last applied (status.lastAppliedRevision), with flux_resource_info's uid, ready, reason and suspended, as flux-operator's metric of the same name. Value is always 1.
# TYPE flux_instance_info gauge
flux_instance_info{exported_namespace="flux-system",kind="FluxInstance",name="flux",ready="True",reason="ReconciliationSucceeded",registry="ghcr.io/fluxcd",revision="v2.7.3@sha256:abc",suspended="True",uid="u1",version="2.x"} 1
# HELP flux_report_distribution_info The Flux distribution as the Flux Operator reports it (FluxReport spec.distribution): version, installation status, the tool that manages it and who issued the entitlement. Value is always 1.
# TYPE flux_report_distribution_info gauge
flux_report_distribution_info{entitlement="Issued by controlplane",exported_namespace="flux-system",kind="FluxReport",managed_by="flux-operator",name="flux",status="Installed",version="v2.7.3"} 1
` + infoHeader + `flux_resource_info{exported_namespace="flux-system",kind="FluxInstance",name="flux",path="clusters/prod",ready="True",reason="ReconciliationSucceeded",ref="refs/heads/main",revision="v2.7.3@sha256:abc",source_name="",suspended="True",uid="u1",url="https://xxxxx@github.com/org/fleet.git"} 1
flux_resource_info{exported_namespace="flux-system",kind="FluxReport",name="flux",path="",ready="False",reason="",ref="",revision="",source_name="",suspended="False",uid="u3",url=""} 1
flux_resource_info{exported_namespace="flux-system",kind="ResourceSet",name="tenants",path="",ready="False",reason="BuildFailed",ref="",revision="",source_name="",suspended="False",uid="u2",url=""} 1
# HELP flux_resource_suspended Whether reconciliation of the Flux object is suspended (1) or not (0): spec.suspend, or for the Flux Operator's kinds the annotation fluxcd.controlplane.io/reconcile: disabled. The same fact is flux_resource_info's suspended label, which the shipped rules read.
# TYPE flux_resource_suspended gauge
flux_resource_suspended{exported_namespace="flux-system",kind="FluxInstance",name="flux"} 1
flux_resource_suspended{exported_namespace="flux-system",kind="FluxReport",name="flux"} 0
flux_resource_suspended{exported_namespace="flux-system",kind="ResourceSet",name="tenants"} 0
# HELP flux_resourceset_inventory_entries Number of Kubernetes objects the ResourceSet generated and manages (status.inventory.entries); flux-operator's flux_resourceset_info carries it as its resources label.
# TYPE flux_resourceset_inventory_entries gauge
flux_resourceset_inventory_entries{exported_namespace="flux-system",kind="ResourceSet",name="tenants"} 2
`
	records := recordsCollector{instance, set, report}
	if err := testutil.CollectAndCompare(records, strings.NewReader(want),
		"flux_instance_info", "flux_report_distribution_info", "flux_resource_info", "flux_resource_suspended", "flux_resourceset_inventory_entries"); err != nil {
		t.Error(err)
	}
	// A Flux kind's annotation of that name is not its suspension.
	k := decodeKind(t, kustomizations, `{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"a","namespace":"b","annotations":{"fluxcd.controlplane.io/reconcile":"disabled"}}}`)
	if err := testutil.CollectAndCompare(recordsCollector{k}, strings.NewReader(`# HELP flux_resource_suspended Whether reconciliation of the Flux object is suspended (1) or not (0): spec.suspend, or for the Flux Operator's kinds the annotation fluxcd.controlplane.io/reconcile: disabled. The same fact is flux_resource_info's suspended label, which the shipped rules read.
# TYPE flux_resource_suspended gauge
flux_resource_suspended{exported_namespace="b",kind="Kustomization",name="a"} 0
`), "flux_resource_suspended"); err != nil {
		t.Error(err)
	}
}
