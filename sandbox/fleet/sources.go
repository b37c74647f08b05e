package fleet

import (
	"fmt"
	"strings"
)

// sourceMsgs are a source kind's condition texts, in source-controller's words.
type sourceMsgs struct {
	ready       string // Ready and ArtifactInStorage message when stored
	readyReason string // "Succeeded" for most kinds
	failCond    string // negative-polarity condition set on failure
	failReason  string
	failMsg     string
	stallReason string
	stallMsg    string
}

// storedMessage is source-controller's Ready message for a stored artifact.
func storedMessage(kind, rev, chartName string) string {
	switch kind {
	case KindOCIRepository:
		return fmt.Sprintf("stored artifact for digest '%s'", rev)
	case KindHelmRepository, KindBucket:
		return fmt.Sprintf("stored artifact: revision '%s'", rev)
	case KindHelmChart:
		return fmt.Sprintf("pulled '%s' chart with version '%s'", chartName, rev)
	default:
		return fmt.Sprintf("stored artifact for revision '%s'", rev)
	}
}

// sourceStatus writes the status source-controller leaves for p's state. It
// returns the artifact consumers can use (nil when there is none) and the
// status. A failing source keeps the artifact of its last success.
func (g *gen) sourceStatus(p *planned, art *artifact, m sourceMsgs, observedGen bool) (map[string]any, *artifact) {
	if m.readyReason == "" {
		m.readyReason = "Succeeded"
	}
	status := map[string]any{}
	if observedGen {
		status["observedGeneration"] = p.obs
	}
	since := g.ago(g.now.Sub(art.updated), 30*day) // ready since before its artifact
	stored := cond("ArtifactInStorage", "True", m.readyReason, m.ready, p.obs, since)
	switch p.st {
	case StateReady:
		status["conditions"] = []any{cond("Ready", "True", m.readyReason, m.ready, p.cond, since), stored}
	case StateFailing:
		failed := g.ago(minute, 6*hour)
		status["conditions"] = []any{
			cond("Ready", "False", m.failReason, m.failMsg, p.cond, failed),
			stored,
			cond(m.failCond, "True", m.failReason, m.failMsg, p.cond, failed),
		}
	case StateProgressing:
		msg := "reconciliation in progress"
		started := g.ago(0, 2*minute)
		status["conditions"] = []any{
			cond("Reconciling", "True", "Progressing", msg, p.cond, started),
			cond("Ready", "Unknown", "Progressing", msg, p.cond, started),
			stored,
		}
	case StateStalled:
		stalled := g.ago(10*minute, 3*day)
		status["conditions"] = []any{
			cond("Stalled", "True", m.stallReason, m.stallMsg, p.cond, stalled),
			cond("Ready", "False", m.stallReason, m.stallMsg, p.cond, stalled),
		}
		return status, nil
	default:
		return nil, nil
	}
	status["artifact"] = art.toMap()
	return status, art
}

func (g *gen) gitRepository(ns, app string) *source {
	if g.full() {
		return nil
	}
	p := g.plan(KindGitRepository, ns, app)
	url := g.pick(gitHosts) + app
	var ref map[string]any
	var refName string
	switch x := g.intn(10); {
	case x < 7:
		refName = "main"
		if x == 6 {
			refName = "release"
		}
		ref = map[string]any{"branch": refName}
	case x < 9:
		refName = fmt.Sprintf("v%d.%d.%d", 1+g.intn(3), g.intn(20), g.intn(10))
		ref = map[string]any{"tag": refName}
	default:
		refName = fmt.Sprintf("v1.%d.%d", g.intn(20), g.intn(10))
		ref = map[string]any{"semver": ">=1.0.0 <2.0.0"}
	}
	spec := map[string]any{"interval": g.pick([]string{"1m", "5m", "10m"}), "url": url, "ref": ref, "timeout": "60s"}
	if strings.HasPrefix(url, "ssh://") || g.chance(0.5) {
		spec["secretRef"] = map[string]any{"name": app + "-git-auth"}
	}
	commit := g.hex(40)
	rev := refName + "@sha1:" + commit
	art := g.newArtifact(storageBase, "gitrepository", ns, p.name, rev, commit+".tar.gz")
	g.settle(p, true)
	status, art := g.sourceStatus(p, art, sourceMsgs{
		ready:       storedMessage(KindGitRepository, rev, ""),
		failCond:    "FetchFailed",
		failReason:  "GitOperationFailed",
		failMsg:     fmt.Sprintf("failed to checkout and determine revision: unable to clone '%s': authentication required: Repository not found.", url),
		stallReason: "URLInvalid",
		stallMsg:    fmt.Sprintf("failed to parse Git URL '%s': unsupported host", url),
	}, true)
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app}) == nil {
		return nil
	}
	s := &source{kind: KindGitRepository, ns: ns, name: p.name, art: art}
	g.reg.gitRepos[ns] = append(g.reg.gitRepos[ns], s)
	return s
}

// gitRepoIn returns a GitRepository of the namespace, making one if none exists.
func (g *gen) gitRepoIn(ns string) *source {
	if l := g.reg.gitRepos[ns]; len(l) > 0 {
		return l[g.intn(len(l))]
	}
	return g.gitRepository(ns, g.pick(appNames))
}

// helmRepository returns the namespace's HelmRepository for the chart's
// repository, creating it when missing; OCI repositories have no status.
func (g *gen) helmRepository(ns string, c chart, oci bool) *source {
	url := c.repoURL
	if oci {
		url = c.ociURL
	}
	if s := g.reg.helmRepos[ns][url]; s != nil {
		return s
	}
	if g.full() {
		return nil
	}
	p := g.plan(KindHelmRepository, ns, c.repoName)
	spec := map[string]any{"url": url, "interval": g.pick([]string{"10m", "30m", "1h"})}
	var status map[string]any
	var art *artifact
	if oci {
		spec["type"] = "oci"
		p.st = StateNoStatus
		g.settle(p, true)
	} else {
		spec["timeout"] = "60s"
		hex := g.hex(64)
		art = g.newArtifact(storageBase, "helmrepository", ns, p.name, "sha256:"+hex, "index-"+hex+".yaml")
		art.digest = art.revision
		g.settle(p, true)
		status, art = g.sourceStatus(p, art, sourceMsgs{
			ready:       storedMessage(KindHelmRepository, art.revision, ""),
			failCond:    "FetchFailed",
			failReason:  "IndexationFailed",
			failMsg:     fmt.Sprintf("failed to fetch Helm repository index: failed to cache index to temporary file: failed to fetch %s/index.yaml : 503 Service Unavailable", url),
			stallReason: "URLInvalid",
			stallMsg:    fmt.Sprintf("invalid Helm repository URL: %s", url),
		}, true)
		if status != nil {
			status["url"] = storageBase + "helmrepository/" + ns + "/" + p.name + "/index.yaml"
		}
	}
	if g.emit(p, spec, status, nil) == nil {
		return nil
	}
	s := &source{kind: KindHelmRepository, ns: ns, name: p.name, art: art}
	if g.reg.helmRepos[ns] == nil {
		g.reg.helmRepos[ns] = map[string]*source{}
	}
	g.reg.helmRepos[ns][url] = s
	return s
}

// ociRepository makes an OCIRepository. A chart source selects the Helm
// chart layer and tags the chart version; manifests use a moving tag.
func (g *gen) ociRepository(ns, base, url, tag string, chartLayer bool) *source {
	if g.full() {
		return nil
	}
	p := g.plan(KindOCIRepository, ns, base)
	ref := map[string]any{"tag": tag}
	if !chartLayer && g.chance(0.3) {
		tag = fmt.Sprintf("1.%d.%d", g.intn(10), g.intn(10))
		ref = map[string]any{"semver": ">=1.0.0"}
	}
	spec := map[string]any{"interval": g.pick([]string{"1m", "5m", "10m"}), "url": url, "ref": ref}
	if chartLayer {
		spec["layerSelector"] = map[string]any{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"}
	}
	rev := tag + "@sha256:" + g.hex(64)
	art := g.newArtifact(storageBase, "ocirepository", ns, p.name, rev, "%s.tar.gz")
	art.metadata = map[string]any{
		"org.opencontainers.image.created":  ts(art.updated),
		"org.opencontainers.image.revision": "main@sha1:" + g.hex(40),
		"org.opencontainers.image.source":   "https://github.com/acme/" + base,
	}
	g.settle(p, true)
	status, art := g.sourceStatus(p, art, sourceMsgs{
		ready:       storedMessage(KindOCIRepository, rev, ""),
		failCond:    "FetchFailed",
		failReason:  "OCIArtifactPullFailed",
		failMsg:     fmt.Sprintf("failed to pull artifact from '%s': GET https://%s: DENIED: denied", url, strings.TrimPrefix(url, "oci://")),
		stallReason: "URLInvalid",
		stallMsg:    fmt.Sprintf("URL scheme invalid in '%s'", url),
	}, true)
	if status != nil {
		status["url"] = storageBase + "ocirepository/" + ns + "/" + p.name + "/latest.tar.gz"
		if chartLayer {
			status["observedLayerSelector"] = spec["layerSelector"]
		}
	}
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": base}) == nil {
		return nil
	}
	return &source{kind: KindOCIRepository, ns: ns, name: p.name, art: art}
}

func (g *gen) bucket(ns, app string) *source {
	if g.full() {
		return nil
	}
	p := g.plan(KindBucket, ns, app+"-manifests")
	var spec map[string]any
	if g.chance(0.5) {
		spec = map[string]any{"provider": "generic", "bucketName": app, "endpoint": "minio.minio-system.svc.cluster.local:9000", "insecure": true, "secretRef": map[string]any{"name": "minio-credentials"}}
	} else {
		spec = map[string]any{"provider": "aws", "bucketName": "acme-" + app, "endpoint": "s3.amazonaws.com", "region": "eu-west-1"}
	}
	spec["interval"] = g.pick([]string{"1m", "5m", "10m"})
	spec["timeout"] = "60s"
	hex := g.hex(64)
	art := g.newArtifact(storageBase, "bucket", ns, p.name, "sha256:"+hex, "%s.tar.gz")
	g.settle(p, true)
	status, art := g.sourceStatus(p, art, sourceMsgs{
		ready:      storedMessage(KindBucket, art.revision, ""),
		failCond:   "FetchFailed",
		failReason: "BucketOperationFailed",
		failMsg:    fmt.Sprintf("bucket '%s' does not exist", spec["bucketName"]),
	}, true)
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app}) == nil {
		return nil
	}
	return &source{kind: KindBucket, ns: ns, name: p.name, art: art}
}

// externalArtifact is an ExternalArtifact as an ArtifactGenerator
// (source-watcher) publishes it; its status has no observedGeneration.
func (g *gen) externalArtifact(ns, app string) *source {
	if g.full() {
		return nil
	}
	p := g.plan(KindExternalArtifact, ns, app)
	generator := app + "-generator"
	spec := map[string]any{"sourceRef": map[string]any{
		"apiVersion": "source.extensions.fluxcd.io/v1beta1", "kind": "ArtifactGenerator", "name": generator, "namespace": ns,
	}}
	rev := "latest@sha256:" + g.hex(64)
	art := g.newArtifact("http://source-watcher.flux-system.svc.cluster.local./", "artifactgenerator", ns, generator, rev, "%s.tar.gz")
	g.settle(p, false)
	status, art := g.sourceStatus(p, art, sourceMsgs{
		ready:      storedMessage(KindExternalArtifact, rev, ""),
		failCond:   "BuildFailed",
		failReason: "BuildFailed",
		failMsg:    fmt.Sprintf("failed to build artifact: source GitRepository/%s/%s is not ready", ns, app),
	}, false)
	if g.emit(p, spec, status, map[string]string{"app.kubernetes.io/part-of": app}) == nil {
		return nil
	}
	return &source{kind: KindExternalArtifact, ns: ns, name: p.name, art: art}
}
