package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// operator adds what a cluster run by the Flux Operator has: the
// FluxInstance that installed Flux, a ResourceSet and the operator's
// FluxReport, all in ns (the fleet's first namespace, flux-system) and
// Ready. None of them draws from g's random stream, so that the rest of the
// fleet draws what it drew before; the FluxReport's reconciler counts are
// filled in once the fleet is complete (reportReconcilers).
func (g *gen) operator(ns string) {
	g.fluxInstance(ns)
	g.resourceSet(ns)
	g.fluxReport(ns)
}

// fluxInstance adds the one FluxInstance, flux: the operator has installed
// the Flux release the stand-in controllers pose as. Its hashes come from
// its content.
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

// resourceSet adds a ResourceSet, tenants, that onboards two tenants: a
// Namespace, ServiceAccount and RoleBinding each, which is what its
// inventory lists. It generates no Flux objects, so the fleet's own objects
// stay the only ones.
func (g *gen) resourceSet(ns string) {
	if g.full() {
		return
	}
	name := g.unique(KindResourceSet, ns, "tenants")
	tenants := []string{"team-alpha", "team-beta"}
	var inputs, inventory []any
	for _, t := range tenants {
		inputs = append(inputs, map[string]any{"tenant": t})
		inventory = append(inventory,
			map[string]any{"id": "_" + t + "__Namespace", "v": "v1"},
			map[string]any{"id": t + "_flux__ServiceAccount", "v": "v1"},
			map[string]any{"id": t + "_flux_rbac.authorization.k8s.io_RoleBinding", "v": "v1"},
		)
	}
	reconciled := g.now.Add(-7 * time.Minute).Truncate(time.Second)
	first := g.now.Add(-26 * time.Hour).Truncate(time.Second)
	obj := map[string]any{
		"apiVersion": groupOperator + "/v1",
		"kind":       KindResourceSet,
		"metadata": map[string]any{
			"name": name, "namespace": ns,
			"annotations": map[string]any{"fluxcd.controlplane.io/reconcileEvery": "30m"},
		},
		"spec": map[string]any{
			"inputs": inputs,
			"resources": []any{
				map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "<< inputs.tenant >>"}},
				map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "flux", "namespace": "<< inputs.tenant >>"}},
				map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
					"metadata": map[string]any{"name": "flux", "namespace": "<< inputs.tenant >>"},
					"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
					"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "flux", "namespace": "<< inputs.tenant >>"}}},
			},
			"wait": true,
		},
		"status": map[string]any{
			"conditions": []any{
				cond("Ready", "True", "ReconciliationSucceeded", "Reconciliation finished in 1s", 1, first),
			},
			"history": []any{map[string]any{
				"digest":                 "sha256:" + contentHash("resourceset/"+ns+"/"+name),
				"firstReconciled":        ts(first),
				"lastReconciled":         ts(reconciled),
				"lastReconciledDuration": "1.2s",
				"lastReconciledStatus":   "ReconciliationSucceeded",
				"totalReconciliations":   int64(53),
				"metadata":               map[string]any{"inputs": fmt.Sprint(len(tenants)), "resources": fmt.Sprint(len(inventory))},
			}},
			"inventory": map[string]any{"entries": inventory},
		},
	}
	g.out = append(g.out, &Object{Group: groupOperator, Kind: KindResourceSet, State: StateReady, Generation: 1,
		Object: &unstructured.Unstructured{Object: obj}})
}

// fluxReport adds the FluxReport flux, which the operator writes in its own
// namespace: the distribution the FluxInstance installed, the controllers'
// readiness as their Deployments show it, and the fleet's objects counted
// by kind (reportReconcilers).
func (g *gen) fluxReport(ns string) {
	if g.full() {
		return
	}
	name := g.unique(KindFluxReport, ns, "flux")
	var components []any
	for _, c := range standin.FluxControllers() {
		components = append(components, map[string]any{
			"name": c.Name, "image": c.Image + "@sha256:" + contentHash(c.Image),
			"ready": true, "status": "Current Deployment is available. Replicas: 1",
		})
	}
	reported := g.now.Add(-3 * time.Minute).Truncate(time.Second)
	obj := map[string]any{
		"apiVersion": groupOperator + "/v1",
		"kind":       KindFluxReport,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"distribution": map[string]any{
				"version": standin.FluxVersion, "status": "Installed",
				"managedBy": "flux-operator", "entitlement": "Issued by controlplane",
			},
			"components": components,
			"cluster":    map[string]any{"platform": "linux/amd64", "serverVersion": "v1.34.1", "nodes": int64(3)},
			"operator":   map[string]any{"apiVersion": groupOperator + "/v1", "platform": "linux/amd64", "version": "v0.33.0"},
		},
		"status": map[string]any{
			"conditions": []any{
				cond("Ready", "True", "ReconciliationSucceeded", "Reporting finished in 212ms", 1, reported),
			},
		},
	}
	g.out = append(g.out, &Object{Group: groupOperator, Kind: KindFluxReport, State: StateReady, Generation: 1,
		Object: &unstructured.Unstructured{Object: obj}})
}

// reportReconcilers counts the fleet's objects into the FluxReport, as the
// operator counts them: per kind, those running, failing (Ready=False) and
// suspended. It runs once the fleet is complete.
func (g *gen) reportReconcilers() {
	i := slices.IndexFunc(g.out, func(o *Object) bool { return o.Kind == KindFluxReport })
	if i < 0 {
		return
	}
	type stats struct{ running, failing, suspended int64 }
	counts := map[string]*stats{}
	for _, o := range g.out {
		if o.Group == groupOperator && o.Kind != KindResourceSet {
			continue // the report counts the reconcilers of Flux and ResourceSets
		}
		s := counts[o.Kind]
		if s == nil {
			s = &stats{}
			counts[o.Kind] = s
		}
		switch {
		case o.Suspended:
			s.suspended++
		default:
			s.running++
		}
		if o.Status() != nil && readyStatus(o.Object.Object) == "False" {
			s.failing++
		}
	}
	var reconcilers []any
	for _, gk := range Kinds {
		s := counts[gk.Kind]
		if s == nil || gk.Kind == KindFluxInstance || gk.Kind == KindFluxReport {
			continue
		}
		version := schemaVersions[gk.Group]
		if gk.Group == groupOperator {
			version = "v1"
		}
		reconcilers = append(reconcilers, map[string]any{
			"apiVersion": gk.Group + "/" + version, "kind": gk.Kind,
			"stats": map[string]any{"running": s.running, "failing": s.failing, "suspended": s.suspended},
		})
	}
	g.out[i].Object.Object["spec"].(map[string]any)["reconcilers"] = reconcilers
}

// readyStatus is the status of an object's Ready condition, "" without one.
func readyStatus(obj map[string]any) string {
	status, _ := obj["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Ready" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// contentHash is a stable 64-digit hex digest of s.
func contentHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
