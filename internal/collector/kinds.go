package collector

// The per-kind table: what the exporter reads from each Flux kind, as plain
// data. A field is named by its path as Flux's API reference writes it
// ("status.history[0].chartVersion"); how it is read is a value of type
// reading or form, never code. docs/metrics.md's per-kind table is generated
// from this table (TestMetricsReference).

// labelSource says where a label's value comes from: the first of paths
// that is set, else def, written in form; or, when derived is set, the
// value flux_resource_info's label of that name has.
type labelSource struct {
	paths   []string
	def     string
	form    form
	derived derivedLabel
}

// derivedLabel is a flux_resource_info label that is worked out from
// several fields (readiness, suspension) rather than read from one.
type derivedLabel int

const (
	notDerived derivedLabel = iota
	readyLabel
	reasonLabel
	suspendedLabel
)

// sameAs takes a label's value from flux_resource_info's, so that a
// kind's own info family agrees with it.
func sameAs(d derivedLabel) labelSource { return labelSource{derived: d} }

// from reads the first of paths that the object sets.
func from(paths ...string) labelSource { return labelSource{paths: paths} }

// or is the value when none of the paths is set: a controller's documented
// default.
func (s labelSource) or(def string) labelSource { s.def = def; return s }

// as sets how the value is written.
func (s labelSource) as(f form) labelSource { s.form = f; return s }

// form is how a label value is written from the field.
type form int

const (
	// plain is the string as the object holds it.
	plain form = iota
	// imageReference is an image reference object {name, tag, digest}
	// written as name:tag@digest.
	imageReference
	// redactedURL is a URL with its credentials replaced (redactURL).
	redactedURL
	// redactedPath is a path whose first segment is kept and the rest, a
	// credential, replaced (a Receiver's /hook/<sha256>).
	redactedPath
)

// reading is how a sample value is read from its field.
type reading int

const (
	// number is a JSON number.
	number reading = iota
	// numberOrZero is a counter that Flux omits while it is zero.
	numberOrZero
	// unixSeconds is an RFC 3339 time, as seconds since the Unix epoch.
	unixSeconds
	// seconds is a Go duration string ("5m0s"), in seconds.
	seconds
	// entries is the length of a list.
	entries
	// flag is a boolean, 1 or 0; absent is 0.
	flag
)

// gaugeSpec is a per-object family with one sample read from one field.
type gaugeSpec struct {
	family *family
	from   string
	read   reading
}

// labelSpec is one label of an info family.
type labelSpec struct {
	name string
	from labelSource
}

// infoSpec is a value-1 family whose labels are read from the object. It
// is emitted when the object sets the when path.
type infoSpec struct {
	family *family
	when   string
	labels []labelSpec
}

// staticWhen says which objects their controller never gives a status:
// all of the kind, or those whose field at path equals value.
type staticWhen struct {
	always      bool
	path, value string
}

// suspension says where a kind keeps "do not reconcile": Flux's own kinds
// in spec.suspend (the zero value), the Flux Operator's in an annotation,
// fluxcd.controlplane.io/reconcile: disabled, since they have no
// spec.suspend.
type suspension struct {
	annotation, value string
}

// kindSpec is what the exporter knows about one Flux kind. A zero label
// source falls back to the generic reading, so an entry lists only how the
// kind differs, and an unknown kind is simply the empty entry.
type kindSpec struct {
	revision, sourceName, url, ref, path labelSource
	// static marks objects that their controller never gives a status;
	// flux get prints them as Ready (docs/flux-semantics.md, rule 1).
	static  staticWhen
	suspend suspension
	gauges  []gaugeSpec
	infos   []infoSpec
	// timeout is how long the controller lets one attempt run.
	timeout timeoutSpec
}

// resourceInfo is flux_resource_info's label values, by name: the
// family's labels and the values given for them come from one table
// (resourceInfoFields), so that no value can land under another label.
type resourceInfo struct {
	uid, ready, reason, suspended, revision, sourceName, url, ref, path string
}

// resourceInfoFields are flux_resource_info's labels after the object
// labels, in order, each with its value.
var resourceInfoFields = []struct {
	label string
	value func(*resourceInfo) string
}{
	{"uid", func(i *resourceInfo) string { return i.uid }},
	{"ready", func(i *resourceInfo) string { return i.ready }},
	{"reason", func(i *resourceInfo) string { return i.reason }},
	{"suspended", func(i *resourceInfo) string { return i.suspended }},
	{"revision", func(i *resourceInfo) string { return i.revision }},
	{"source_name", func(i *resourceInfo) string { return i.sourceName }},
	{"url", func(i *resourceInfo) string { return i.url }},
	{"ref", func(i *resourceInfo) string { return i.ref }},
	{"path", func(i *resourceInfo) string { return i.path }},
}

func resourceInfoLabels() []string {
	out := make([]string, len(resourceInfoFields))
	for i, f := range resourceInfoFields {
		out[i] = f.label
	}
	return out
}

// values are the label values in the family's order.
func (i *resourceInfo) values() []string {
	out := make([]string, len(resourceInfoFields))
	for n, f := range resourceInfoFields {
		out[n] = f.value(i)
	}
	return out
}

// The families every kind has.
var (
	resourceInfoFamily = perObject("resource_info",
		"Information about a Flux object: readiness, suspension, the applied revision and where it comes from. Value is always 1.",
		resourceInfoLabels()...)
	attemptedRevisionFamily = perObject("resource_attempted_revision_info",
		"The revision the controller last attempted to apply (status.lastAttemptedRevision). Value is always 1.",
		"revision")
	conditionFamily = perObject("resource_condition",
		"A status condition of a Flux object, one series per condition type present. Value is always 1.",
		"type", "status", "reason")
	// Opt-in: Ready's and Reconciling's transitions date only the latest
	// retry, and the failure conditions' are folded into
	// flux_resource_not_ready_since_timestamp_seconds, which the rules read
	// (docs/flux-semantics.md, rule 12, "FetchFailed and Ready").
	conditionTransitionFamily = perObject("resource_condition_last_transition_timestamp_seconds",
		"When the status condition last changed, in Unix seconds.", "type").offByDefault()
	// Opt-in, as flux_resource_generation: unobservedGenerationFamily
	// (record.go) compares the two for the rules, on the few objects
	// where it matters.
	conditionGenerationFamily = perObject("resource_condition_observed_generation",
		"The metadata.generation the controller was acting on when it last set the condition (status.conditions[].observedGeneration). Ready is rewritten on every reconcile attempt, failed ones included, so a Ready observed generation below metadata.generation means the controller has not yet acted on the spec; flux_resource_unobserved_generation is that comparison, on by default.", "type").offByDefault()

	// suspendedFamily is read from the kind's suspension, not from one
	// field, so Decode writes it rather than the gauge list.
	suspendedFamily = perObject("resource_suspended", "Whether reconciliation of the Flux object is suspended (1) or not (0): spec.suspend, or for the Flux Operator's kinds the annotation fluxcd.controlplane.io/reconcile: disabled. The same fact is flux_resource_info's suspended label, which the shipped rules read.").offByDefault()

	// genericGauges apply to every kind; a kind's own gauges follow them.
	genericGauges = []gaugeSpec{
		{perObject("resource_generation", "The object's metadata.generation; it increases on every spec change.").offByDefault(), "metadata.generation", number},
		{perObject("resource_observed_generation", "The generation of the last reconcile that ended well (status.observedGeneration); it stays behind while reconciles of a new spec fail. Whether the controller acts on the spec at all is flux_resource_unobserved_generation.").offByDefault(), "status.observedGeneration", number},
		{perObject("resource_interval_seconds", "The reconciliation interval from spec.interval, in seconds.").offByDefault(), "spec.interval", seconds},
		{perObject("resource_created_timestamp_seconds", "When the object was created, in Unix seconds.").offByDefault(), "metadata.creationTimestamp", unixSeconds},
		{perObject("source_artifact_size_bytes", "Size of the source's current artifact (status.artifact.size), in bytes.").offByDefault(), "status.artifact.size", number},
		{perObject("source_artifact_last_update_timestamp_seconds", "When the source's artifact last changed (status.artifact.lastUpdateTime), in Unix seconds."), "status.artifact.lastUpdateTime", unixSeconds},
	}

	// genericSpec is how any kind is read where its entry says nothing.
	genericSpec = kindSpec{
		revision:   from("status.artifact.revision", "status.lastAppliedRevision"),
		sourceName: from("spec.sourceRef.name"),
		url:        from("spec.url"),
	}
)

// kinds is the table of known Flux kinds, by Kind name.
var kinds = map[string]kindSpec{
	// ref is the reference source-controller checks out: the first of these
	// it finds set, else its default (docs/flux-semantics.md, rule 4). For
	// Git the order is fluxcd/pkg git/gogit Client.Clone's, where a tag wins
	// over a semver range, whatever the API comments say.
	"GitRepository":  {ref: from("spec.ref.commit", "spec.ref.name", "spec.ref.tag", "spec.ref.semver", "spec.ref.branch").or("master")},
	"OCIRepository":  {ref: from("spec.ref.digest", "spec.ref.semver", "spec.ref.tag").or("latest")},
	"HelmRepository": {static: staticWhen{path: "spec.type", value: "oci"}},
	"Bucket":         {url: from("spec.endpoint"), ref: from("spec.bucketName")},
	"HelmChart":      {ref: from("spec.version").or("*"), path: from("spec.chart")},
	"Alert":          {static: staticWhen{always: true}},
	"Provider":       {static: staticWhen{always: true}},
	"Kustomization": {
		revision: from("status.lastAppliedRevision"),
		path:     from("spec.path"),
		// kustomize-controller v1.9.4 api/v1 Kustomization.GetTimeout:
		// spec.timeout, else the interval less 30s but at least 30s (the
		// API comment says "defaults to Interval"; the code is the rule).
		timeout: timeoutSpec{paths: []string{"spec.timeout"}, defPath: "spec.interval", defLess: 30, floor: 30},
		infos: []infoSpec{infoOf("kustomization_origin_revision_info", "The revision of the origin the applied artifact was built from (status.lastAppliedOriginRevision), such as the Git commit an OCI artifact was pushed from; notification-controller prefers it for commit statuses. Absent unless the artifact records an origin. Value is always 1.",
			"status.lastAppliedOriginRevision",
			labelSpec{"origin_revision", from("status.lastAppliedOriginRevision")},
		).offByDefault()},
		gauges: []gaugeSpec{
			{perObject("kustomization_inventory_entries", "Number of Kubernetes objects the Kustomization manages (status.inventory.entries).").offByDefault(), "status.inventory.entries", entries},
			{perObject("kustomization_last_reconcile_timestamp_seconds", "When the Kustomization was last reconciled (status.history[0].lastReconciled), in Unix seconds."), "status.history[0].lastReconciled", unixSeconds},
			{perObject("kustomization_last_reconcile_duration_seconds", "How long the last reconciliation took (status.history[0].lastReconciledDuration), in seconds.").offByDefault(), "status.history[0].lastReconciledDuration", seconds},
			{perObject("kustomization_reconciliations", "Reconciliations that built the same manifests with the same outcome as the last one (status.history[0].totalReconciliations).").offByDefault(), "status.history[0].totalReconciliations", number},
		},
	},
	"HelmRelease": {
		// As flux get prints it: the deployed chart version, else the chart
		// version last attempted (a first install that failed).
		revision:   from("status.history[0].chartVersion", "status.lastAttemptedRevision"),
		sourceName: from("spec.chartRef.name", "spec.chart.spec.sourceRef.name"),
		// helm-controller api/v2 HelmReleaseSpec.Timeout "Defaults to
		// '5m0s'", and each action's own timeout overrides it.
		timeout: timeoutSpec{paths: []string{"spec.timeout", "spec.install.timeout", "spec.upgrade.timeout", "spec.test.timeout", "spec.rollback.timeout", "spec.uninstall.timeout"}, def: 300},
		gauges: []gaugeSpec{
			{perObject("helmrelease_release_revision", "The Helm release version (status.history[0].version); it increases on each install, upgrade or rollback."), "status.history[0].version", number},
			{perObject("helmrelease_failures", "Failed Helm actions (install, upgrade, test, rollback, uninstall) against the current desired state: helm-controller clears it when the generation, chart version or values change, or on a reset request (status.failures)."), "status.failures", numberOrZero},
			{perObject("helmrelease_install_failures", "Failed installs against the current desired state, counted towards install remediation retries (status.installFailures).").offByDefault(), "status.installFailures", numberOrZero},
			{perObject("helmrelease_upgrade_failures", "Failed upgrades against the current desired state, counted towards upgrade remediation retries (status.upgradeFailures).").offByDefault(), "status.upgradeFailures", numberOrZero},
			{perObject("helmrelease_last_action_duration_seconds", "How long helm-controller's last install or upgrade took (status.lastAttemptedReleaseActionDuration), in seconds.").offByDefault(), "status.lastAttemptedReleaseActionDuration", seconds},
			{perObject("helmrelease_last_deployed_timestamp_seconds", "When the current Helm release was last deployed (status.history[0].lastDeployed), in Unix seconds."), "status.history[0].lastDeployed", unixSeconds},
		},
		infos: []infoSpec{infoOf("helmrelease_info", "The current Helm release of a HelmRelease (status.history[0]). Value is always 1.",
			"status.history[0]",
			labelSpec{"chart_name", from("status.history[0].chartName")},
			labelSpec{"chart_version", from("status.history[0].chartVersion")},
			labelSpec{"app_version", from("status.history[0].appVersion")},
			labelSpec{"release_status", from("status.history[0].status")},
			labelSpec{"release_action", from("status.history[0].action")},
			labelSpec{"storage_namespace", from("status.storageNamespace")},
		)},
	},
	// The webhook path is the generic Receiver's only credential.
	"Receiver": {url: from("status.webhookPath").as(redactedPath)},
	"ImageRepository": {
		url:      from("spec.image"),
		revision: from("status.lastScanResult.revision"),
		gauges: []gaugeSpec{
			{perObject("imagerepository_tags", "Number of tags found by the last scan (status.lastScanResult.tagCount).").offByDefault(), "status.lastScanResult.tagCount", number},
			{perObject("imagerepository_last_scan_timestamp_seconds", "When the image repository was last scanned (status.lastScanResult.scanTime), in Unix seconds."), "status.lastScanResult.scanTime", unixSeconds},
		},
	},
	"ImagePolicy": {
		sourceName: from("spec.imageRepositoryRef.name"),
		revision:   from("status.latestRef").as(imageReference),
		infos: []infoSpec{infoOf("imagepolicy_info", "The latest image reference an ImagePolicy selected (status.latestRef). Value is always 1.",
			"status.latestRef",
			labelSpec{"latest_ref", from("status.latestRef").as(imageReference)},
		)},
	},
	"ImageUpdateAutomation": {
		sourceName: from("spec.sourceRef.name"),
		path:       from("spec.update.path"),
		revision:   from("status.lastPushCommit"),
		gauges: []gaugeSpec{
			{perObject("imageupdateautomation_last_push_timestamp_seconds", "When the automation last pushed a commit (status.lastPushTime), in Unix seconds.").offByDefault(), "status.lastPushTime", unixSeconds},
			{perObject("imageupdateautomation_last_run_timestamp_seconds", "When the automation last ran (status.lastAutomationRunTime), in Unix seconds."), "status.lastAutomationRunTime", unixSeconds},
		},
	},

	// The Flux Operator's kinds (fluxcd.controlplane.io), from its public API
	// documentation (docs/compat.md). A FluxInstance's url, ref and path are
	// those of the cluster's own sync source (spec.sync).
	"FluxInstance": {
		revision: from("status.lastAppliedRevision"),
		url:      from("spec.sync.url"),
		ref:      from("spec.sync.ref"),
		path:     from("spec.sync.path"),
		suspend:  operatorSuspension,
		// flux-operator's own flux_instance_info, with its labels, so that
		// queries written for the operator's metrics work unchanged.
		infos: []infoSpec{infoOf("instance_info", "The Flux distribution a FluxInstance installs: the registry of its images (spec.distribution.registry), the version range asked for (spec.distribution.version) and the revision last applied (status.lastAppliedRevision), with flux_resource_info's uid, ready, reason and suspended, as flux-operator's metric of the same name. Value is always 1.",
			"spec.distribution",
			labelSpec{"uid", from("metadata.uid")},
			labelSpec{"ready", sameAs(readyLabel)},
			labelSpec{"reason", sameAs(reasonLabel)},
			labelSpec{"suspended", sameAs(suspendedLabel)},
			labelSpec{"registry", from("spec.distribution.registry")},
			labelSpec{"revision", from("status.lastAppliedRevision")},
			labelSpec{"version", from("spec.distribution.version")},
		)},
	},
	"ResourceSet": {
		suspend: operatorSuspension,
		gauges: []gaugeSpec{
			{perObject("resourceset_inventory_entries", "Number of Kubernetes objects the ResourceSet generated and manages (status.inventory.entries); flux-operator's flux_resourceset_info carries it as its resources label."), "status.inventory.entries", entries},
		},
	},
	// Its url is the generic spec.url, the external service it polls.
	"ResourceSetInputProvider": {suspend: operatorSuspension},
	"FluxReport": {
		suspend: operatorSuspension,
		infos: []infoSpec{infoOf("report_distribution_info", "The Flux distribution as the Flux Operator reports it (FluxReport spec.distribution): version, installation status, the tool that manages it and who issued the entitlement. Value is always 1.",
			"spec.distribution",
			labelSpec{"version", from("spec.distribution.version")},
			labelSpec{"status", from("spec.distribution.status")},
			labelSpec{"managed_by", from("spec.distribution.managedBy")},
			labelSpec{"entitlement", from("spec.distribution.entitlement")},
		)},
	},
}

// operatorSuspension is how the Flux Operator's kinds are paused: they have
// no spec.suspend.
var operatorSuspension = suspension{annotation: "fluxcd.controlplane.io/reconcile", value: "disabled"}

// infoOf declares an info family whose label names are those of its label
// specs, so that names and sources cannot drift apart.
func infoOf(name, help, when string, labels ...labelSpec) infoSpec {
	names := make([]string, len(labels))
	for i, l := range labels {
		names[i] = l.name
	}
	return infoSpec{family: perObject(name, help, names...), when: when, labels: labels}
}

// offByDefault makes the info family opt-in (family.offByDefault).
func (in infoSpec) offByDefault() infoSpec {
	in.family.offByDefault()
	return in
}

// specFor resolves a kind's entry with the generic fallbacks filled in.
// Resolved specs are built once.
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
	for _, f := range []struct{ dst, def *labelSource }{
		{&s.revision, &genericSpec.revision}, {&s.sourceName, &genericSpec.sourceName},
		{&s.url, &genericSpec.url}, {&s.ref, &genericSpec.ref}, {&s.path, &genericSpec.path},
	} {
		if f.dst.paths == nil && f.dst.def == "" {
			*f.dst = *f.def
		}
	}
	s.gauges = append(append([]gaugeSpec{}, genericGauges...), s.gauges...)
	return &s
}
