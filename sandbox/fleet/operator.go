package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// fluxInstance adds the one FluxInstance a cluster run by the Flux Operator
// has, flux in ns (the fleet's first namespace, flux-system), Ready: the
// operator has installed the Flux release the stand-in controllers pose as.
// Its hashes come from its content, not from g's random stream, so that the
// rest of the fleet draws what it drew before.
func (g *gen) fluxInstance(ns string) {
	if g.full() {
		return
	}
	name := g.unique(KindFluxInstance, ns, "flux")
	var names, componentsStatus, inventory []any
	for _, c := range standin.FluxControllers() {
		repo, tag, _ := strings.Cut(c.Image, ":")
		names = append(names, c.Name)
		componentsStatus = append(componentsStatus, map[string]any{
			"name": c.Name, "repository": repo, "tag": tag, "digest": "sha256:" + contentHash(c.Image),
		})
		for _, kind := range []string{"ServiceAccount", "Service"} {
			inventory = append(inventory, map[string]any{"id": ns + "_" + c.Name + "__" + kind, "v": "v1"})
		}
		inventory = append(inventory, map[string]any{"id": ns + "_" + c.Name + "_apps_Deployment", "v": "v1"})
	}
	inventory = append(inventory, map[string]any{"id": "_" + ns + "__Namespace", "v": "v1"})
	for _, gk := range Kinds {
		if gk.Group == groupOperator {
			continue // the operator's own CRDs are not part of the Flux it installs
		}
		plural := strings.ToLower(gk.Kind) + "s"
		if strings.HasSuffix(gk.Kind, "y") {
			plural = strings.ToLower(strings.TrimSuffix(gk.Kind, "y")) + "ies"
		}
		inventory = append(inventory, map[string]any{"id": "_" + plural + "." + gk.Group + "_apiextensions.k8s.io_CustomResourceDefinition", "v": "v1"})
	}

	revision := standin.FluxVersion + "@sha256:" + contentHash("flux-distribution/"+standin.FluxVersion)
	installed := g.now.Add(-26 * time.Hour).Truncate(time.Second)
	obj := map[string]any{
		"apiVersion": groupOperator + "/v1",
		"kind":       KindFluxInstance,
		"metadata": map[string]any{
			"name": name, "namespace": ns,
			"annotations": map[string]any{"fluxcd.controlplane.io/reconcileEvery": "1h"},
		},
		"spec": map[string]any{
			"distribution": map[string]any{"version": "2.x", "registry": "ghcr.io/fluxcd"},
			"components":   names,
			"cluster":      map[string]any{"type": "kubernetes", "multitenant": false, "networkPolicy": true, "domain": "cluster.local"},
		},
		"status": map[string]any{
			"conditions": []any{
				cond("Ready", "True", "ReconciliationSucceeded", "Reconciliation finished in 41s", 1, installed),
			},
			"lastAppliedRevision":   revision,
			"lastAttemptedRevision": revision,
			"components":            componentsStatus,
			"inventory":             map[string]any{"entries": inventory},
		},
	}
	g.out = append(g.out, &Object{Group: groupOperator, Kind: KindFluxInstance, State: StateReady, Generation: 1,
		Object: &unstructured.Unstructured{Object: obj}})
}

// contentHash is a stable 64-digit hex digest of s.
func contentHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
