package fleet

import (
	"fmt"
	"sort"
	"strconv"
)

// imageAutomation: an ImageRepository scanned by image-reflector-controller,
// policies picking its latest tag, and an ImageUpdateAutomation writing
// them back to a GitRepository of the namespace.
func (g *gen) imageAutomation(ns string) { g.imageAutomationN(ns, 1+g.intn(2)) }

func (g *gen) imageAutomationN(ns string, policyCount int) {
	git := g.gitRepoIn(ns)
	if git == nil || g.full() {
		return
	}
	app := g.pick(appNames)
	image := "ghcr.io/acme/" + app
	tags := g.imageRepository(ns, app, image)
	if g.full() {
		return
	}
	policies := map[string]any{}
	for i := range policyCount {
		name, ref := g.imagePolicy(ns, app, image, tags, i == 1)
		if name == "" {
			return
		}
		if ref != nil {
			policies[name] = ref
		}
	}
	g.imageUpdateAutomation(ns, app, git, policies)
}

// imageTags returns the scanned tags, semver first, newest first.
func (g *gen) imageTags() []string {
	var tags []string
	major := 1 + g.intn(3)
	for minor := range 1 + g.intn(8) {
		for patch := range 1 + g.intn(6) {
			tags = append(tags, fmt.Sprintf("%d.%d.%d", major, minor, patch))
		}
	}
	sort.Slice(tags, func(i, j int) bool {
		_, a, _ := splitVersion(tags[i])
		_, b, _ := splitVersion(tags[j])
		return a[1] > b[1] || (a[1] == b[1] && a[2] > b[2])
	})
	return tags
}

// imageRepository returns the scanned tags, or nil when there is no scan.
func (g *gen) imageRepository(ns, app, image string) []string {
	p := g.plan(KindImageRepository, ns, app)
	spec := map[string]any{
		"image":         image,
		"interval":      g.pick([]string{"1m", "5m", "10m"}),
		"provider":      "generic",
		"exclusionList": []any{`^.*\.sig$`},
	}
	if g.chance(0.5) {
		spec["secretRef"] = map[string]any{"name": "ghcr-auth"}
	}
	tags := g.imageTags()
	// Registries also hold CI tags the semver policies skip.
	count := len(tags) + g.intn(200)
	checksum := strconv.FormatUint(uint64(g.r.Uint32()), 10)
	g.settle(p, true)
	status := map[string]any{"observedGeneration": p.obs, "canonicalImageName": image}
	scanned := g.ago(0, 5*minute)
	scan := map[string]any{"tagCount": int64(count), "scanTime": ts(scanned), "revision": checksum}
	latest := make([]any, 0, 10)
	for _, t := range tags[:min(10, len(tags))] {
		latest = append(latest, t)
	}
	scan["latestTags"] = latest
	readyMsg := fmt.Sprintf("successful scan: found %d tags with checksum %s", count, checksum)
	since := g.ago(hour, 20*day)
	switch p.st {
	case StateReady:
		status["conditions"] = []any{cond("Ready", "True", "Succeeded", readyMsg, p.cond, since)}
	case StateProgressing:
		started := g.ago(0, 2*minute)
		status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", "reconciliation in progress", p.cond, started),
			cond("Ready", "Unknown", "Progressing", "reconciliation in progress", p.cond, started),
		}
	case StateFailing:
		failed := g.ago(minute, 6*hour)
		scan["scanTime"] = ts(failed.Add(-10 * minute))
		msg := fmt.Sprintf("failed to scan image '%s': GET https://ghcr.io/v2/acme/%s/tags/list?n=1000: UNAUTHORIZED: authentication required", image, app)
		status["conditions"] = []any{cond("Ready", "False", "AuthenticationFailed", msg, p.cond, failed)}
	case StateStalled:
		stalled := g.ago(10*minute, 3*day)
		msg := fmt.Sprintf("invalid image name '%s': could not parse reference", image)
		status["conditions"] = []any{
			cond("Stalled", "True", "ImageURLInvalid", msg, p.cond, stalled),
			cond("Ready", "False", "ImageURLInvalid", msg, p.cond, stalled),
		}
		scan = nil
		tags = nil
	default:
		tags = nil
	}
	if scan != nil {
		status["lastScanResult"] = scan
		status["observedExclusionList"] = []any{`^.*\.sig$`}
	}
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app}) == nil {
		return nil
	}
	return tags
}

// imagePolicy returns its name and the resolved image reference (nil when
// unresolved), or "" when the fleet is full.
func (g *gen) imagePolicy(ns, app, image string, tags []string, patchOnly bool) (string, map[string]any) {
	if g.full() {
		return "", nil
	}
	base := app
	rng := ">=1.0.0"
	if patchOnly {
		base = app + "-patch"
	}
	p := g.plan(KindImagePolicy, ns, base)
	if len(tags) > 0 && patchOnly {
		_, n, _ := splitVersion(tags[0])
		rng = fmt.Sprintf("~%d.%d", n[0], n[1])
	} else if len(tags) > 0 {
		_, n, _ := splitVersion(tags[0])
		rng = fmt.Sprintf(">=%d.0.0 <%d.0.0", n[0], n[0]+1)
	}
	spec := map[string]any{
		"imageRepositoryRef": map[string]any{"name": app},
		"policy":             map[string]any{"semver": map[string]any{"range": rng}},
	}
	if p.runs() && tags == nil {
		p.st = StateFailing
	}
	if p.st == StateStalled {
		p.st = StateFailing
	}
	g.settle(p, true) // Apply edits digestReflectionPolicy instead of an interval
	status := map[string]any{"observedGeneration": p.obs}
	var ref map[string]any
	switch p.st {
	case StateReady, StateProgressing:
		ref = map[string]any{"name": image, "tag": tags[0]}
		status["latestRef"] = ref
		if len(tags) > 1 && g.chance(0.5) {
			status["observedPreviousRef"] = map[string]any{"name": image, "tag": tags[1]}
		}
		status["conditions"] = []any{cond("Ready", "True", "Succeeded", fmt.Sprintf("Latest image tag for %s resolved to %s", image, tags[0]), p.cond, g.ago(hour, 10*day))}
		if p.st == StateProgressing {
			started := g.ago(0, 2*minute)
			status["conditions"] = []any{
				cond("Reconciling", "True", "Progressing", "reconciliation in progress", p.cond, started),
				cond("Ready", "Unknown", "Progressing", "reconciliation in progress", p.cond, started),
			}
		}
	case StateFailing:
		failed := g.ago(minute, 3*hour)
		reason, msg := "ReconciliationFailed", "cannot determine latest tag for policy: version list argument cannot be empty"
		if tags == nil {
			reason, msg = "DependencyNotReady", fmt.Sprintf("retrying in 30s, error: ImageRepository '%s/%s' is not ready", ns, app)
		}
		status["conditions"] = []any{cond("Ready", "False", reason, msg, p.cond, failed)}
	}
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app}) == nil {
		return "", nil
	}
	if p.st != StateReady {
		return p.name, nil
	}
	return p.name, ref
}

func (g *gen) imageUpdateAutomation(ns, app string, git *source, policies map[string]any) {
	if g.full() {
		return
	}
	p := g.plan(KindImageUpdateAutomation, ns, app+"-updates")
	if p.st == StateStalled {
		p.st = StateFailing
	}
	spec := map[string]any{
		"interval":  g.pick([]string{"5m", "30m", "1h"}),
		"sourceRef": map[string]any{"kind": KindGitRepository, "name": git.name},
		"git": map[string]any{
			"checkout": map[string]any{"ref": map[string]any{"branch": "main"}},
			"commit": map[string]any{
				"author":          map[string]any{"email": "fluxcdbot@users.noreply.github.com", "name": "fluxcdbot"},
				"messageTemplate": "Automated image update\n\n{{ range .Changed.Changes }}{{ .OldValue }} -> {{ .NewValue }}\n{{ end }}",
			},
			"push": map[string]any{"branch": "main"},
		},
		"update":         map[string]any{"path": "./apps/" + ns, "strategy": "Setters"},
		"policySelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/part-of": app}},
	}
	g.settle(p, true)
	status := map[string]any{"observedGeneration": p.obs}
	ranAt := g.ago(0, 30*minute)
	status["lastAutomationRunTime"] = ts(ranAt)
	status["lastPushCommit"] = g.hex(40)
	status["lastPushTime"] = ts(g.ago(hour, 14*day))
	if git.art != nil {
		status["observedSourceRevision"] = git.art.revision
	}
	if len(policies) > 0 {
		status["observedPolicies"] = policies
	}
	switch p.st {
	case StateReady:
		status["conditions"] = []any{cond("Ready", "True", "Succeeded", "repository up-to-date", p.cond, g.ago(hour, 10*day))}
	case StateProgressing:
		started := g.ago(0, 2*minute)
		status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", "reconciliation in progress", p.cond, started),
			cond("Ready", "Unknown", "Progressing", "reconciliation in progress", p.cond, started),
		}
	case StateFailing:
		msg := fmt.Sprintf("failed to push to remote: remote: Permission to acme/%s.git denied to fluxcdbot.", git.name)
		status["conditions"] = []any{cond("Ready", "False", "GitOperationFailed", msg, p.cond, ranAt)}
	}
	g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app})
}

// notifications: a Provider, Alerts sending to it and a Receiver for pushes.
// Alerts and Providers have no status.
func (g *gen) notifications(ns string) { g.notificationsN(ns, 1+g.intn(2)) }

func (g *gen) notificationsN(ns string, alerts int) {
	if g.full() {
		return
	}
	typ := g.pick(providerTypes)
	p := g.plan(KindProvider, ns, typ)
	spec := map[string]any{"type": typ}
	switch typ {
	case "slack":
		spec["channel"] = "#flux-" + ns
		spec["secretRef"] = map[string]any{"name": "slack-webhook"}
	case "github":
		spec["address"] = "https://github.com/acme/" + g.pick(appNames)
		spec["secretRef"] = map[string]any{"name": "github-token"}
	case "generic":
		spec["address"] = "http://alert-relay.monitoring.svc.cluster.local:8080/flux"
	default:
		spec["secretRef"] = map[string]any{"name": typ + "-webhook"}
	}
	g.settle(p, false)
	if g.emit(p, spec, nil, nil) == nil {
		return
	}
	provider := p.name

	for i := range alerts {
		severity := []string{"info", "error"}[i]
		a := g.plan(KindAlert, ns, provider+"-"+severity)
		sources := []any{
			map[string]any{"kind": KindKustomization, "name": "*"},
			map[string]any{"kind": KindHelmRelease, "name": "*"},
		}
		if severity == "error" {
			sources = append(sources, map[string]any{"kind": KindGitRepository, "name": "*"}, map[string]any{"kind": KindOCIRepository, "name": "*"})
		}
		aspec := map[string]any{
			"providerRef":   map[string]any{"name": provider},
			"eventSeverity": severity,
			"eventSources":  sources,
			"summary":       "cluster: prod-eu-1",
		}
		if severity == "info" {
			aspec["exclusionList"] = []any{".*upgrade.*has.*started", ".*is.*not.*ready"}
		}
		g.settle(a, false)
		if g.emit(a, aspec, nil, nil) == nil {
			return
		}
	}
	g.receiver(ns)
}

func (g *gen) receiver(ns string) {
	git := g.gitRepoIn(ns)
	if git == nil || g.full() {
		return
	}
	p := g.plan(KindReceiver, ns, git.name+"-push")
	if p.st == StateStalled {
		p.st = StateFailing
	}
	spec := map[string]any{
		"type":      "github",
		"interval":  "10m",
		"events":    []any{"ping", "push"},
		"secretRef": map[string]any{"name": "webhook-token"},
		"resources": []any{map[string]any{"kind": KindGitRepository, "name": git.name}},
	}
	g.settle(p, true)
	// The path is a hash of the token, name and namespace.
	path := "/hook/" + g.hex(64)
	status := map[string]any{"observedGeneration": p.obs}
	switch p.st {
	case StateReady:
		status["webhookPath"] = path
		status["conditions"] = []any{cond("Ready", "True", "Succeeded", "Receiver initialized for path: "+path, p.cond, g.ago(hour, 30*day))}
	case StateProgressing:
		status["webhookPath"] = path
		started := g.ago(0, 2*minute)
		status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", "Reconciliation in progress", p.cond, started),
			cond("Ready", "Unknown", "Progressing", "Reconciliation in progress", p.cond, started),
		}
	case StateFailing:
		msg := fmt.Sprintf("unable to read token from secret '%s/webhook-token' error: Secret \"webhook-token\" not found", ns)
		status["conditions"] = []any{cond("Ready", "False", "TokenNotFound", msg, p.cond, g.ago(minute, 6*hour))}
	}
	g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": git.name})
}
