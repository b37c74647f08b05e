package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// objectLabels identify the Flux object behind a per-object series. The
// namespace label is exported_namespace so it never collides with the
// scrape target's own namespace label.
var objectLabels = []string{"kind", "name", "exported_namespace"}

func objectDesc(subsystem, name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help,
		append(append([]string{}, objectLabels...), extra...), nil)
}

// gauge is a per-object sample family read from one place in the object.
type gauge struct {
	desc  *prometheus.Desc
	value value
}

// info is a value-1 family whose labels are read from the object. It is
// emitted when the object has the `when` path.
type info struct {
	desc   *prometheus.Desc
	when   []any
	fields []field
}

// kindSpec is what the exporter knows about one Flux kind. A nil field
// falls back to the generic reading, so an entry lists only how the kind
// differs and an unknown kind is simply the empty entry.
type kindSpec struct {
	revision, sourceName, url, ref, path field
	// static reports objects that their controller never gives a status;
	// flux get prints them as Ready (see docs/flux-semantics.md).
	static predicate
	gauges []gauge
	infos  []info
}

var (
	resourceInfoDesc = objectDesc("resource", "info",
		"Information about a Flux object: readiness, suspension, the applied revision and where it comes from. Value is always 1.",
		"uid", "ready", "reason", "suspended", "revision", "source_name", "url", "ref", "path")
	attemptedRevisionDesc = objectDesc("resource", "attempted_revision_info",
		"The revision the controller last attempted to apply (status.lastAttemptedRevision). Value is always 1.",
		"revision")
	conditionDesc = objectDesc("resource", "condition",
		"A status condition of a Flux object, one series per condition type present. Value is always 1.",
		"type", "status", "reason")
	conditionTransitionDesc = objectDesc("resource", "condition_last_transition_timestamp_seconds",
		"When the status condition last changed, in Unix seconds.", "type")
	conditionGenerationDesc = objectDesc("resource", "condition_observed_generation",
		"The metadata.generation the controller was acting on when it last set the condition (status.conditions[].observedGeneration). Ready is rewritten on every reconcile attempt, failed ones included, so a Ready observed generation below metadata.generation means the controller has not yet acted on the spec.", "type")

	// genericGauges apply to every kind; a kind's own gauges follow them.
	genericGauges = []gauge{
		{objectDesc("resource", "suspended", "Whether reconciliation of the Flux object is suspended (1) or not (0)."), flag("spec", "suspend")},
		{objectDesc("resource", "generation", "The object's metadata.generation; it increases on every spec change."), num("metadata", "generation")},
		{objectDesc("resource", "observed_generation", "The generation of the last reconcile that ended well (status.observedGeneration); it stays behind while reconciles of a new spec fail. Whether the controller acts on the spec at all is flux_resource_condition_observed_generation{type=\"Ready\"}."), num("status", "observedGeneration")},
		{objectDesc("resource", "interval_seconds", "The reconciliation interval from spec.interval, in seconds."), duration("spec", "interval")},
		{objectDesc("resource", "created_timestamp_seconds", "When the object was created, in Unix seconds."), timestamp("metadata", "creationTimestamp")},
		{objectDesc("source", "artifact_size_bytes", "Size of the source's current artifact (status.artifact.size), in bytes."), num("status", "artifact", "size")},
		{objectDesc("source", "artifact_last_update_timestamp_seconds", "When the source's artifact last changed (status.artifact.lastUpdateTime), in Unix seconds."), timestamp("status", "artifact", "lastUpdateTime")},
	}

	defaultSpec = kindSpec{
		revision:   firstOf(str("status", "artifact", "revision"), str("status", "lastAppliedRevision")),
		sourceName: str("spec", "sourceRef", "name"),
		url:        str("spec", "url"),
		ref:        none,
		path:       none,
		static:     never,
	}

	// kinds is the table of known Flux kinds, by Kind name.
	kinds = map[string]kindSpec{
		// The ref source-controller checks out: the first of these it finds
		// set, else its default (docs/flux-semantics.md, "Which ref"). For
		// Git the order is fluxcd/pkg git/gogit Client.Clone's, where a tag
		// wins over a semver range, whatever the API comments say.
		"GitRepository": {ref: firstOf(str("spec", "ref", "commit"), str("spec", "ref", "name"),
			str("spec", "ref", "tag"), str("spec", "ref", "semver"), str("spec", "ref", "branch"), constant("master"))},
		"OCIRepository": {ref: firstOf(str("spec", "ref", "digest"), str("spec", "ref", "semver"),
			str("spec", "ref", "tag"), constant("latest"))},
		"HelmRepository": {static: equals("oci", "spec", "type")},
		"Bucket":         {url: str("spec", "endpoint"), ref: str("spec", "bucketName")},
		"HelmChart":      {ref: firstOf(str("spec", "version"), constant("*")), path: str("spec", "chart")},
		"Alert":          {static: always},
		"Provider":       {static: always},
		"Kustomization": {
			revision: str("status", "lastAppliedRevision"),
			path:     str("spec", "path"),
			gauges: []gauge{
				{objectDesc("kustomization", "inventory_entries", "Number of Kubernetes objects the Kustomization manages (status.inventory.entries)."), length("status", "inventory", "entries")},
				{objectDesc("kustomization", "last_reconcile_timestamp_seconds", "When the Kustomization was last reconciled (status.history[0].lastReconciled), in Unix seconds."), timestamp("status", "history", 0, "lastReconciled")},
				{objectDesc("kustomization", "last_reconcile_duration_seconds", "How long the last reconciliation took (status.history[0].lastReconciledDuration), in seconds."), duration("status", "history", 0, "lastReconciledDuration")},
				{objectDesc("kustomization", "reconciliations", "Reconciliations that built the same manifests with the same outcome as the last one (status.history[0].totalReconciliations)."), num("status", "history", 0, "totalReconciliations")},
			},
		},
		"HelmRelease": {
			// As flux get prints it: the deployed chart version, else the
			// chart version last attempted (a first install that failed).
			revision:   firstOf(str("status", "history", 0, "chartVersion"), str("status", "lastAttemptedRevision")),
			sourceName: firstOf(str("spec", "chartRef", "name"), str("spec", "chart", "spec", "sourceRef", "name")),
			gauges: []gauge{
				{objectDesc("helmrelease", "release_revision", "The Helm release version (status.history[0].version); it increases on each install, upgrade or rollback."), num("status", "history", 0, "version")},
				{objectDesc("helmrelease", "failures", "Failed Helm actions (install, upgrade, test, rollback, uninstall) against the current desired state: helm-controller clears it when the generation, chart version or values change, or on a reset request (status.failures)."), numOrZero("status", "failures")},
				{objectDesc("helmrelease", "install_failures", "Failed installs against the current desired state, counted towards install remediation retries (status.installFailures)."), numOrZero("status", "installFailures")},
				{objectDesc("helmrelease", "upgrade_failures", "Failed upgrades against the current desired state, counted towards upgrade remediation retries (status.upgradeFailures)."), numOrZero("status", "upgradeFailures")},
				{objectDesc("helmrelease", "last_action_duration_seconds", "How long helm-controller's last install or upgrade took (status.lastAttemptedReleaseActionDuration), in seconds."), duration("status", "lastAttemptedReleaseActionDuration")},
				{objectDesc("helmrelease", "last_deployed_timestamp_seconds", "When the current Helm release was last deployed (status.history[0].lastDeployed), in Unix seconds."), timestamp("status", "history", 0, "lastDeployed")},
			},
			infos: []info{{
				desc: objectDesc("helmrelease", "info",
					"The current Helm release of a HelmRelease (status.history[0]). Value is always 1.",
					"chart_name", "chart_version", "app_version", "release_status", "release_action", "storage_namespace"),
				when: []any{"status", "history", 0},
				fields: []field{str("status", "history", 0, "chartName"), str("status", "history", 0, "chartVersion"),
					str("status", "history", 0, "appVersion"), str("status", "history", 0, "status"),
					str("status", "history", 0, "action"), str("status", "storageNamespace")},
			}},
		},
		// The webhook path is the generic Receiver's only credential.
		"Receiver": {url: redactedPath(str("status", "webhookPath"))},
		"ImageRepository": {
			url:      str("spec", "image"),
			revision: str("status", "lastScanResult", "revision"),
			gauges: []gauge{
				{objectDesc("imagerepository", "tags", "Number of tags found by the last scan (status.lastScanResult.tagCount)."), num("status", "lastScanResult", "tagCount")},
				{objectDesc("imagerepository", "last_scan_timestamp_seconds", "When the image repository was last scanned (status.lastScanResult.scanTime), in Unix seconds."), timestamp("status", "lastScanResult", "scanTime")},
			},
		},
		"ImagePolicy": {
			sourceName: str("spec", "imageRepositoryRef", "name"),
			revision:   imageRef("status", "latestRef"),
			infos: []info{{
				desc:   objectDesc("imagepolicy", "info", "The latest image reference an ImagePolicy selected (status.latestRef). Value is always 1.", "latest_ref"),
				when:   []any{"status", "latestRef"},
				fields: []field{imageRef("status", "latestRef")},
			}},
		},
		"ImageUpdateAutomation": {
			sourceName: str("spec", "sourceRef", "name"),
			path:       str("spec", "update", "path"),
			revision:   str("status", "lastPushCommit"),
			gauges: []gauge{
				{objectDesc("imageupdateautomation", "last_push_timestamp_seconds", "When the automation last pushed a commit (status.lastPushTime), in Unix seconds."), timestamp("status", "lastPushTime")},
				{objectDesc("imageupdateautomation", "last_run_timestamp_seconds", "When the automation last ran (status.lastAutomationRunTime), in Unix seconds."), timestamp("status", "lastAutomationRunTime")},
			},
		},
	}
)

func none(*reader) string { return "" }

// numOrZero reads a counter that Flux omits while it is zero.
func numOrZero(path ...any) value {
	return func(r *reader) (float64, bool) {
		v, _ := r.num(path...)
		return v, true
	}
}

// imageRef renders an image reference {name, tag, digest} as name:tag@digest.
func imageRef(path ...any) field {
	return func(r *reader) string {
		at := func(k string) []any { return append(append([]any{}, path...), k) }
		ref := r.str(at("name")...)
		if tag := r.str(at("tag")...); tag != "" {
			ref += ":" + tag
		}
		if digest := r.str(at("digest")...); digest != "" {
			ref += "@" + digest
		}
		return ref
	}
}

// specFor resolves a kind's entry with the generic fallbacks filled in.
// Resolved specs are cached: records point at them.
func specFor(kind string) *kindSpec {
	if s, ok := resolvedSpecs[kind]; ok {
		return s
	}
	return resolvedSpecs[""]
}

var resolvedSpecs = func() map[string]*kindSpec {
	out := map[string]*kindSpec{"": resolve(kindSpec{})}
	for k, s := range kinds {
		out[k] = resolve(s)
	}
	return out
}()

func resolve(s kindSpec) *kindSpec {
	for _, f := range []struct {
		dst *field
		def field
	}{
		{&s.revision, defaultSpec.revision}, {&s.sourceName, defaultSpec.sourceName},
		{&s.url, defaultSpec.url}, {&s.ref, defaultSpec.ref}, {&s.path, defaultSpec.path},
	} {
		if *f.dst == nil {
			*f.dst = f.def
		}
	}
	if s.static == nil {
		s.static = defaultSpec.static
	}
	s.gauges = append(append([]gauge{}, genericGauges...), s.gauges...)
	return &s
}

// allDescs lists every per-object family, for docs and Describe.
func allDescs() []*prometheus.Desc {
	seen := map[*prometheus.Desc]bool{}
	out := []*prometheus.Desc{resourceInfoDesc, attemptedRevisionDesc, conditionDesc, conditionTransitionDesc, conditionGenerationDesc}
	for _, s := range resolvedSpecs {
		for _, g := range s.gauges {
			if !seen[g.desc] {
				seen[g.desc] = true
				out = append(out, g.desc)
			}
		}
		for _, i := range s.infos {
			if !seen[i.desc] {
				seen[i.desc] = true
				out = append(out, i.desc)
			}
		}
	}
	return out
}
