package fleet

import "k8s.io/apimachinery/pkg/runtime/schema"

// API groups of the Flux kinds the fleet covers.
const (
	groupSource       = "source.toolkit.fluxcd.io"
	groupKustomize    = "kustomize.toolkit.fluxcd.io"
	groupHelm         = "helm.toolkit.fluxcd.io"
	groupNotification = "notification.toolkit.fluxcd.io"
	groupImage        = "image.toolkit.fluxcd.io"
	// The Flux Operator's group; its CRD is ours (sandbox/crds/operator).
	groupOperator = "fluxcd.controlplane.io"
)

// Kind names, as Flux spells them.
const (
	KindGitRepository         = "GitRepository"
	KindOCIRepository         = "OCIRepository"
	KindHelmRepository        = "HelmRepository"
	KindHelmChart             = "HelmChart"
	KindBucket                = "Bucket"
	KindExternalArtifact      = "ExternalArtifact"
	KindKustomization         = "Kustomization"
	KindHelmRelease           = "HelmRelease"
	KindAlert                 = "Alert"
	KindProvider              = "Provider"
	KindReceiver              = "Receiver"
	KindImageRepository       = "ImageRepository"
	KindImagePolicy           = "ImagePolicy"
	KindImageUpdateAutomation = "ImageUpdateAutomation"
	KindFluxInstance          = "FluxInstance"
	KindResourceSet           = "ResourceSet"
	KindFluxReport            = "FluxReport"
)

// Kinds lists every kind the fleet generates, in a stable order.
var Kinds = []schema.GroupKind{
	{Group: groupSource, Kind: KindGitRepository},
	{Group: groupSource, Kind: KindOCIRepository},
	{Group: groupSource, Kind: KindHelmRepository},
	{Group: groupSource, Kind: KindHelmChart},
	{Group: groupSource, Kind: KindBucket},
	{Group: groupSource, Kind: KindExternalArtifact},
	{Group: groupKustomize, Kind: KindKustomization},
	{Group: groupHelm, Kind: KindHelmRelease},
	{Group: groupNotification, Kind: KindAlert},
	{Group: groupNotification, Kind: KindProvider},
	{Group: groupNotification, Kind: KindReceiver},
	{Group: groupImage, Kind: KindImageRepository},
	{Group: groupImage, Kind: KindImagePolicy},
	{Group: groupImage, Kind: KindImageUpdateAutomation},
	{Group: groupOperator, Kind: KindFluxInstance},
	{Group: groupOperator, Kind: KindResourceSet},
	{Group: groupOperator, Kind: KindFluxReport},
}

// schemaVersions are the API versions whose schemas the generated specs and
// statuses follow (the versions in sandbox/crds/flux). Apply still asks the
// server which version to use, so a CRD that serves a newer version with the
// same shape (Alert and Provider v1) works unchanged.
var schemaVersions = map[string]string{
	groupSource:       "v1",
	groupKustomize:    "v1",
	groupHelm:         "v2",
	groupNotification: "v1beta3",
	groupImage:        "v1",
}

func groupOf(kind string) string {
	for _, gk := range Kinds {
		if gk.Kind == kind {
			return gk.Group
		}
	}
	return ""
}

// hasStatusSubresource reports whether a kind's controller writes a status.
// Alert and Provider have none; OCI HelmRepositories are handled separately.
func hasStatusSubresource(kind string) bool {
	return kind != KindAlert && kind != KindProvider
}

// stallable kinds are those whose controllers set Stalled=True in practice.
var stallable = map[string]bool{
	KindGitRepository:   true,
	KindOCIRepository:   true,
	KindHelmRepository:  true,
	KindHelmRelease:     true,
	KindImageRepository: true,
}

// namespaceNames are used in order; more namespaces than listed get tenant-NN.
var namespaceNames = []string{
	"flux-system", "infra", "monitoring", "team-payments", "team-search",
	"team-checkout", "team-identity", "team-data", "ingress", "security",
}

// appNames name Kustomizations, Git repositories and images.
var appNames = []string{
	"podinfo", "frontend", "backend", "payments-api", "search", "checkout",
	"cart", "inventory", "orders", "auth", "notifications", "reports",
	"billing", "gateway", "catalog", "users", "recommendations", "shipping",
	"ledger", "analytics", "webhooks", "scheduler", "mailer", "storefront",
}

// kustomizeLayers are the usual split of one repository into ordered
// Kustomizations, each depending on the one before.
var kustomizeLayers = []string{"crds", "controllers", "configs", "apps"}

type chart struct {
	name       string
	version    string
	appVersion string
	repoName   string // HelmRepository name
	repoURL    string // https:// for default repositories
	ociURL     string // oci:// registry for OCI HelmRepositories and OCIRepositories
}

var charts = []chart{
	{"podinfo", "6.7.1", "6.7.1", "podinfo", "https://stefanprodan.github.io/podinfo", "oci://ghcr.io/stefanprodan/charts"},
	{"ingress-nginx", "4.11.3", "1.11.3", "ingress-nginx", "https://kubernetes.github.io/ingress-nginx", "oci://ghcr.io/acme-mirror/ingress-nginx"},
	{"cert-manager", "1.16.1", "v1.16.1", "jetstack", "https://charts.jetstack.io", "oci://quay.io/jetstack/charts"},
	{"kube-prometheus-stack", "65.1.1", "v0.77.1", "prometheus-community", "https://prometheus-community.github.io/helm-charts", "oci://ghcr.io/prometheus-community/charts"},
	{"grafana", "8.5.2", "11.2.2", "grafana", "https://grafana.github.io/helm-charts", "oci://ghcr.io/grafana/helm-charts"},
	{"loki", "6.18.0", "3.2.0", "grafana", "https://grafana.github.io/helm-charts", "oci://ghcr.io/grafana/helm-charts"},
	{"redis", "20.2.1", "7.4.1", "bitnami", "https://charts.bitnami.com/bitnami", "oci://registry-1.docker.io/bitnamicharts"},
	{"postgresql", "16.0.3", "17.0.0", "bitnami", "https://charts.bitnami.com/bitnami", "oci://registry-1.docker.io/bitnamicharts"},
	{"external-dns", "1.15.0", "0.15.0", "external-dns", "https://kubernetes-sigs.github.io/external-dns", "oci://ghcr.io/acme-mirror/external-dns"},
	{"metrics-server", "3.12.2", "0.7.2", "metrics-server", "https://kubernetes-sigs.github.io/metrics-server", "oci://ghcr.io/acme-mirror/metrics-server"},
	{"kyverno", "3.2.7", "v1.12.6", "kyverno", "https://kyverno.github.io/kyverno", "oci://ghcr.io/kyverno/charts"},
	{"sealed-secrets", "2.16.1", "0.27.1", "sealed-secrets", "https://bitnami-labs.github.io/sealed-secrets", "oci://ghcr.io/acme-mirror/sealed-secrets"},
}

var gitHosts = []string{"https://github.com/acme/", "ssh://git@github.com/acme/", "https://gitlab.com/acme/platform/"}

var intervals = []string{"1m", "5m", "10m", "15m", "30m", "1h"}

var providerTypes = []string{"slack", "msteams", "discord", "github", "generic"}

// Source-controller serves artifacts from this address in a default install.
const storageBase = "http://source-controller.flux-system.svc.cluster.local./"
