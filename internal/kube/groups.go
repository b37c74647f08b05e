package kube

// The API groups and namespaces the exporter may watch, and the checks of
// the flags that name them.

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultAPIGroups are the API groups whose CRDs are watched unless
// --flux.api-groups says otherwise: the Flux toolkit, the source extensions
// (ArtifactGenerator) and the Flux Operator, whose group fluxcd.controlplane.io
// shares no suffix with the others. An explicit list rather than a suffix
// match, because the exporter can only read what its ClusterRole grants: the
// ClusterRoles of charts/flux-exporter and deploy/ grant exactly these
// groups, and main_test.go and sandbox/e2e/install_test.go fail when they
// differ.
var DefaultAPIGroups = []string{
	"source.toolkit.fluxcd.io",
	"kustomize.toolkit.fluxcd.io",
	"helm.toolkit.fluxcd.io",
	"notification.toolkit.fluxcd.io",
	"image.toolkit.fluxcd.io",
	"source.extensions.fluxcd.io",
	"fluxcd.controlplane.io",
}

// ValidateNamespaces rejects a namespace that is both watched and excluded.
func ValidateNamespaces(include, exclude []string) error {
	for _, ns := range include {
		if slices.Contains(exclude, ns) {
			return fmt.Errorf("namespace %q is both in --namespaces and --namespaces-exclude; drop it from one of them", ns)
		}
	}
	return nil
}

// ParseAPIGroups reads --flux.api-groups: comma-separated API groups,
// without duplicates. Unlike the namespace lists, an empty entry is an
// error: "a,,b" or a trailing comma is more likely a typo than a wish, and
// an empty list would watch nothing.
func ParseAPIGroups(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--flux.api-groups is empty, so no Flux kind would be watched; give comma-separated API groups, e.g. %s", strings.Join(DefaultAPIGroups[:2], ","))
	}
	var out []string
	for i, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			return nil, fmt.Errorf("--flux.api-groups=%q: entry %d is empty; give comma-separated API groups, e.g. %s", s, i+1, strings.Join(DefaultAPIGroups[:2], ","))
		}
		out = append(out, g)
	}
	out = dedupe(out)
	if err := ValidateAPIGroups(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateAPIGroups rejects a group that no CRD can have: a CRD's
// spec.group must be a lowercase DNS subdomain with at least one dot.
func ValidateAPIGroups(groups []string) error {
	for _, g := range groups {
		errs := validation.IsDNS1123Subdomain(g)
		if !strings.Contains(g, ".") {
			errs = append(errs, "a CRD's group has at least one dot")
		}
		if len(errs) > 0 {
			return fmt.Errorf("--flux.api-groups: %q is not an API group (%s); use the CRDs' spec.group, e.g. %s", g, strings.Join(errs, "; "), DefaultAPIGroups[0])
		}
	}
	return nil
}

// dedupe drops repeated entries, keeping the first of each.
func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
