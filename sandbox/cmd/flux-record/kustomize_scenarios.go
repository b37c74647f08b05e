package main

import (
	"context"
	"fmt"
	"time"
)

// Kustomizations in these scenarios run at 1/60 of a 10m interval and a
// 2m retryInterval, and apply into the scenario's namespace. They set no
// spec.timeout: kustomize-controller then waits the interval less 30s, at
// least 30s (30s while recording; the replay's 10m interval gives 9m30s,
// docs/flux-semantics.md rule 13).

const kustomizationBadCommitWhy = `A Kustomization applies a good commit, then a commit that kustomize cannot
build, retried every retryInterval, then a fixed commit. Recorded from
source-controller and kustomize-controller.`

func (r *scene) gitRepository(ctx context.Context, name string) error {
	r.tp.act("create GitRepository %s (interval 10s) at %s", name, r.w.git.url)
	return r.apply(ctx, fmt.Sprintf(`{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, metadata: {name: %s},
  spec: {interval: 10s, timeout: 5s, url: %q, ref: {branch: main}}}`, name, r.w.git.url))
}

func (r *scene) kustomization(ctx context.Context, name, path, dependsOn string) error {
	deps := ""
	if dependsOn != "" {
		deps = fmt.Sprintf(", dependsOn: [{name: %s}]", dependsOn)
	}
	r.tp.act("create Kustomization %s (path %s, interval 10s, retryInterval 2s%s)", name, path, deps)
	return r.apply(ctx, fmt.Sprintf(`{apiVersion: kustomize.toolkit.fluxcd.io/v1, kind: Kustomization, metadata: {name: %s},
  spec: {interval: 10s, retryInterval: 2s, prune: true, path: %s, targetNamespace: %s,
    sourceRef: {kind: GitRepository, name: fleet}%s}}`, name, path, r.ns, deps))
}

func kustomizationBadCommit(ctx context.Context, r *scene) error {
	good, err := r.commit(ctx, "fleet", "good", fleetFiles())
	if err != nil {
		return err
	}
	if err := r.gitRepository(ctx, "fleet"); err != nil {
		return err
	}
	if err := r.kustomization(ctx, "apps", "./apps", ""); err != nil {
		return err
	}
	if err := r.await(ctx, "Kustomization", "apps", time.Minute, "Ready at "+good, readyAt("lastAppliedRevision", good)); err != nil {
		return err
	}
	if err := r.hold(ctx, 5*time.Second); err != nil {
		return err
	}
	bad, err := r.commit(ctx, "fleet", "reference a missing file", badFleetFiles())
	if err != nil {
		return err
	}
	if err := r.await(ctx, "Kustomization", "apps", time.Minute, "BuildFailed at "+bad, is("Ready", "False", "BuildFailed")); err != nil {
		return err
	}
	if err := r.hold(ctx, 25*time.Second); err != nil {
		return err
	}
	fixed, err := r.commit(ctx, "fleet", "fix", fleetFiles())
	if err != nil {
		return err
	}
	if err := r.await(ctx, "Kustomization", "apps", time.Minute, "Ready at "+fixed, readyAt("lastAppliedRevision", fixed)); err != nil {
		return err
	}
	return r.hold(ctx, 10*time.Second)
}

const missingDependencyWhy = `A Kustomization depends on one that does not exist yet; it waits, retried
every --requeue-dependency, until the dependency is created and ready.
Recorded from source-controller and kustomize-controller.`

func missingDependency(ctx context.Context, r *scene) error {
	if _, err := r.commit(ctx, "fleet", "good", fleetFiles()); err != nil {
		return err
	}
	if err := r.gitRepository(ctx, "fleet"); err != nil {
		return err
	}
	if err := r.await(ctx, "GitRepository", "fleet", time.Minute, "Ready", readyAt("", "")); err != nil {
		return err
	}
	if err := r.kustomization(ctx, "apps", "./apps", "infra"); err != nil {
		return err
	}
	if err := r.await(ctx, "Kustomization", "apps", time.Minute, "DependencyNotReady", is("Ready", "False", "DependencyNotReady")); err != nil {
		return err
	}
	if err := r.hold(ctx, 25*time.Second); err != nil {
		return err
	}
	if err := r.kustomization(ctx, "infra", "./infra", ""); err != nil {
		return err
	}
	if err := r.await(ctx, "Kustomization", "apps", time.Minute, "Ready", readyAt("", "")); err != nil {
		return err
	}
	return r.hold(ctx, 10*time.Second)
}
