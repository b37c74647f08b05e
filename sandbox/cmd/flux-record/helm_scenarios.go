package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// HelmReleases in these scenarios run at 1/60 of a 10m interval, with
// Helm's default 5m timeout (replayed as it is: the alerts wait 15m for a
// HelmRelease whose timeout is shorter), from the chart "demo" of the
// repository in charts.go.

func (r *scene) helmRepository(ctx context.Context) error {
	r.tp.act("create HelmRepository charts (interval 10s) at %s", r.w.charts.url)
	return r.apply(ctx, fmt.Sprintf(`{apiVersion: source.toolkit.fluxcd.io/v1, kind: HelmRepository, metadata: {name: charts},
  spec: {interval: 10s, timeout: 5s, url: %q}}`, r.w.charts.url))
}

// helmRelease creates or updates the HelmRelease demo at chart version
// with the upgrade remediation written in YAML flow style.
func (r *scene) helmRelease(ctx context.Context, version, upgrade string) error {
	r.tp.act("apply HelmRelease demo: chart demo %s, upgrade %s", version, upgrade)
	return r.apply(ctx, fmt.Sprintf(`{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, metadata: {name: demo},
  spec: {interval: 10s, values: {extraNamespace: %s-late},
    chart: {spec: {chart: demo, version: %q, interval: 10s, sourceRef: {kind: HelmRepository, name: charts}}},
    upgrade: %s}}`, r.ns, version, upgrade))
}

// installed creates the repository and the release at 1.0.0 and waits
// until it is Ready, then lets it run a while.
func (r *scene) installed(ctx context.Context, upgrade string) error {
	if err := r.helmRepository(ctx); err != nil {
		return err
	}
	if err := r.helmRelease(ctx, "1.0.0", upgrade); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "Ready after install", readyAt("", "")); err != nil {
		return err
	}
	return r.hold(ctx, 5*time.Second)
}

// upgradedTo changes the chart version and waits until the release is
// Ready at it again.
func (r *scene) upgradedTo(ctx context.Context, version, upgrade string) error {
	if err := r.helmRelease(ctx, version, upgrade); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "Ready at "+version, readyAt("", "")); err != nil {
		return err
	}
	return r.hold(ctx, 10*time.Second)
}

const rollbackStalledWhy = `A HelmRelease upgrade fails (chart 2.0.0 writes into a namespace that does
not exist); under the default RemediateOnFailure strategy with one retry,
helm-controller rolls back, retries, rolls back again and stalls with
RetriesExceeded; a new chart version then upgrades it. Recorded from
source-controller and helm-controller.`

func rollbackStalled(ctx context.Context, r *scene) error {
	const upgrade = "{remediation: {retries: 1}}"
	if err := r.installed(ctx, upgrade); err != nil {
		return err
	}
	if err := r.helmRelease(ctx, "2.0.0", upgrade); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "Stalled", is("Stalled", "True", "RetriesExceeded")); err != nil {
		return err
	}
	if err := r.hold(ctx, 25*time.Second); err != nil {
		return err
	}
	return r.upgradedTo(ctx, "1.1.0", upgrade)
}

const countersOutliveWhy = `A HelmRelease upgrade fails once; helm-controller rolls back (the default
RemediateOnFailure strategy, one retry), and the retry of the same spec
succeeds because the namespace it writes into now exists. The release is
Ready=True UpgradeSucceeded with status.failures and upgradeFailures left
at 1 (helm-controller resets them under RemediateOnFailure only when the
spec changes). Recorded from source-controller and helm-controller.`

func countersOutlive(ctx context.Context, r *scene) error {
	const upgrade = "{remediation: {retries: 1}}"
	if err := r.installed(ctx, upgrade); err != nil {
		return err
	}
	if err := r.helmRelease(ctx, "2.0.0", upgrade); err != nil {
		return err
	}
	failed := func(u *unstructured.Unstructured) bool {
		n, _, _ := unstructured.NestedInt64(u.Object, "status", "upgradeFailures")
		return n >= 1
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "a failed upgrade", failed); err != nil {
		return err
	}
	r.tp.act("create namespace %s-late, which chart 2.0.0 writes into", r.ns)
	if err := r.w.namespace(ctx, r.ns+"-late"); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "Ready after the retried upgrade", is("Ready", "True", "UpgradeSucceeded")); err != nil {
		return fmt.Errorf("%w (if it stalled, the retry ran before the namespace existed: record again)", err)
	}
	return r.hold(ctx, 30*time.Second)
}

const retryOnFailureWhy = `A HelmRelease upgrade fails under the RetryOnFailure upgrade strategy
(retryInterval 5m): helm-controller neither rolls back nor stalls, and
retries the upgrade every retryInterval with Ready=Unknown before each
attempt; a new chart version then upgrades it. Recorded from
source-controller and helm-controller.`

func retryOnFailure(ctx context.Context, r *scene) error {
	const upgrade = "{strategy: {name: RetryOnFailure, retryInterval: 5s}}"
	if err := r.installed(ctx, upgrade); err != nil {
		return err
	}
	if err := r.helmRelease(ctx, "2.0.0", upgrade); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmRelease", "demo", 2*time.Minute, "UpgradeFailed", is("Ready", "False", "UpgradeFailed")); err != nil {
		return err
	}
	if err := r.hold(ctx, 30*time.Second); err != nil {
		return err
	}
	return r.upgradedTo(ctx, "1.1.0", upgrade)
}

const chartMissingWhy = `A HelmRelease asks for a chart version the repository does not have:
source-controller cannot build the HelmChart and helm-controller waits for
it; a version that exists then installs. Recorded from source-controller
and helm-controller.`

func chartMissing(ctx context.Context, r *scene) error {
	const upgrade = "{remediation: {retries: 1}}"
	if err := r.helmRepository(ctx); err != nil {
		return err
	}
	if err := r.helmRelease(ctx, "9.9.9", upgrade); err != nil {
		return err
	}
	if err := r.await(ctx, "HelmChart", r.ns+"-demo", time.Minute, "a failed HelmChart", is("Ready", "False", "")); err != nil {
		return err
	}
	if err := r.hold(ctx, 25*time.Second); err != nil {
		return err
	}
	return r.upgradedTo(ctx, "1.0.0", upgrade)
}
