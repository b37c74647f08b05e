package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

const (
	// VersionLabel is set by Flux's install on its CRDs, Deployments and Pods.
	VersionLabel = "app.kubernetes.io/version"
	// MetricsPortName is the container port Flux controllers serve /metrics on.
	MetricsPortName = "http-prom"
	// DefaultMetricsPort is controller-runtime's default metrics port, used
	// when no container declares MetricsPortName.
	DefaultMetricsPort = 8080
)

// ErrNotServed means the API server serves no Deployments or Pods, as with
// the sandbox's CRD-only server.
var ErrNotServed = errors.New("the API server does not serve apps/v1 Deployments or v1 Pods")

// ControllersOptions configure a Controllers watcher.
type ControllersOptions struct {
	// Namespace is where the Flux controllers run.
	Namespace string
	// Selector picks the controllers' Deployments and Pods.
	Selector string
	Logger   *slog.Logger
}

// Deployment is the compact record of a controller's Deployment.
type Deployment struct {
	Namespace, Name string
	// Image is the first container's image.
	Image string
	// Version is the Deployment's VersionLabel, else its pod template's.
	Version string
	// Desired is spec.replicas; Ready is status.readyReplicas.
	Desired, Ready int32
}

func (d *Deployment) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name}
}

// Pod is the compact record of a controller's Pod.
type Pod struct {
	Namespace, Name string
	// Controller is the name of the Deployment the pod belongs to; see
	// podController.
	Controller string
	IP         string
	// Port is the metrics port: the container port named MetricsPortName,
	// else DefaultMetricsPort.
	Port  int32
	Phase corev1.PodPhase
	// Ready is the status of the pod's Ready condition.
	Ready bool
}

func (p *Pod) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}
}

// Scrapable reports whether the pod should answer on its metrics port.
func (p Pod) Scrapable() bool {
	return p.Ready && p.Phase == corev1.PodRunning && p.IP != "" && p.Port > 0
}

// Controllers keeps informer caches of the Flux controllers' Deployments and
// Pods in one namespace, as compact records.
type Controllers struct {
	client      kubernetes.Interface
	opts        ControllersOptions
	log         *slog.Logger
	factory     informers.SharedInformerFactory
	deployments cache.SharedIndexInformer
	pods        cache.SharedIndexInformer
	// unserved is set when the API server has no Deployments or Pods; the
	// watcher is then empty and ready.
	unserved atomic.Bool
}

// NewControllers builds the watcher from the same client configuration as
// the Flux object watcher. Start runs it.
func NewControllers(cfg *rest.Config, opts ControllersOptions) (*Controllers, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the Flux namespace is empty; set --flux.namespace")
	}
	if _, err := labels.Parse(opts.Selector); err != nil {
		return nil, fmt.Errorf("invalid --flux.controllers-selector %q: %w", opts.Selector, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	c := &Controllers{client: client, opts: opts, log: opts.Logger}
	c.factory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = opts.Selector }))
	c.deployments = c.factory.Apps().V1().Deployments().Informer()
	c.pods = c.factory.Core().V1().Pods().Informer()
	for _, inf := range []struct {
		kind      string
		informer  cache.SharedIndexInformer
		transform cache.TransformFunc
	}{{"Deployment", c.deployments, transformDeployment}, {"Pod", c.pods, transformPod}} {
		if err := inf.informer.SetTransform(inf.transform); err != nil {
			return nil, fmt.Errorf("set %s transform: %w", inf.kind, err)
		}
		if err := inf.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			c.log.Warn("Watch of Flux controllers failed; serving the cached ones while retrying",
				"kind", inf.kind, "namespace", opts.Namespace, "err", err)
		}); err != nil {
			return nil, fmt.Errorf("set %s watch error handler: %w", inf.kind, err)
		}
	}
	return c, nil
}

// Start checks that the exporter may list the controllers, then runs the
// informers until ctx is done. Missing RBAC is an error that says what to
// grant; an API server without Deployments or Pods (the sandbox's CRD-only
// mode) is logged and leaves the watcher empty.
func (c *Controllers) Start(ctx context.Context) error {
	err := c.checkAccess(ctx)
	if errors.Is(err, ErrNotServed) {
		c.unserved.Store(true)
		c.log.Warn("Flux controllers cannot be discovered; the controllers collector reports none", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	c.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		c.factory.Shutdown()
	}()
	return nil
}

func (c *Controllers) checkAccess(ctx context.Context) error {
	list := metav1.ListOptions{LabelSelector: c.opts.Selector, Limit: 1}
	_, derr := c.client.AppsV1().Deployments(c.opts.Namespace).List(ctx, list)
	_, perr := c.client.CoreV1().Pods(c.opts.Namespace).List(ctx, list)
	for _, r := range []struct {
		resource string
		err      error
	}{{"deployments", derr}, {"pods", perr}} {
		switch {
		case r.err == nil:
		case apierrors.IsNotFound(r.err):
			return fmt.Errorf("%w: list %s: %v", ErrNotServed, r.resource, r.err)
		case apierrors.IsForbidden(r.err):
			return fmt.Errorf("%w; grant list and watch on %s in namespace %s, or pass --no-collector.controllers", r.err, r.resource, c.opts.Namespace)
		default:
			return fmt.Errorf("list %s in namespace %s: %w", r.resource, c.opts.Namespace, r.err)
		}
	}
	return nil
}

// Ready reports whether both caches have synced.
func (c *Controllers) Ready() (bool, []string) {
	if c.unserved.Load() {
		return true, nil
	}
	var pending []string
	if !c.deployments.HasSynced() {
		pending = append(pending, "Deployment ("+c.opts.Namespace+")")
	}
	if !c.pods.HasSynced() {
		pending = append(pending, "Pod ("+c.opts.Namespace+")")
	}
	return len(pending) == 0, pending
}

// Deployments returns the controllers' Deployments sorted by name. It reads
// only the local cache.
func (c *Controllers) Deployments() []Deployment {
	if c.unserved.Load() {
		return nil
	}
	out := listAs[Deployment](c.deployments)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Pods returns the controllers' Pods sorted by name. It reads only the
// local cache.
func (c *Controllers) Pods() []Pod {
	if c.unserved.Load() {
		return nil
	}
	out := listAs[Pod](c.pods)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// listAs copies the records out of the cache, so that callers cannot
// change what the informer holds.
func listAs[V any](inf cache.SharedIndexInformer) []V {
	var out []V
	for _, obj := range inf.GetStore().List() {
		if r, ok := obj.(*V); ok {
			out = append(out, *r)
		}
	}
	return out
}

func transformDeployment(obj any) (any, error) {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return obj, nil // already compact, or a tombstone
	}
	r := &Deployment{Namespace: d.Namespace, Name: d.Name, Version: d.Labels[VersionLabel], Desired: 1, Ready: d.Status.ReadyReplicas}
	if r.Version == "" {
		r.Version = d.Spec.Template.Labels[VersionLabel]
	}
	if d.Spec.Replicas != nil {
		r.Desired = *d.Spec.Replicas
	}
	if cs := d.Spec.Template.Spec.Containers; len(cs) > 0 {
		r.Image = cs[0].Image
	}
	return r, nil
}

func transformPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	r := &Pod{Namespace: p.Namespace, Name: p.Name, Controller: podController(p), IP: p.Status.PodIP,
		Port: metricsPort(p), Phase: p.Status.Phase}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			r.Ready = cond.Status == corev1.ConditionTrue
		}
	}
	return r, nil
}

// podController names the Deployment a pod belongs to, so that its series
// join flux_controller_info. A Deployment's pods are owned by a ReplicaSet
// named <deployment>-<pod-template-hash>, which gives the name exactly,
// sharded copies included. Pods without that owner (made by hand, or by
// another workload kind) fall back to the labels Flux's install sets, app
// and then app.kubernetes.io/component, and finally to the pod's own name.
func podController(p *corev1.Pod) string {
	if hash := p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; hash != "" {
		for _, ref := range p.OwnerReferences {
			if ref.Kind == "ReplicaSet" && strings.HasSuffix(ref.Name, "-"+hash) {
				return strings.TrimSuffix(ref.Name, "-"+hash)
			}
		}
	}
	for _, l := range []string{"app", "app.kubernetes.io/component"} {
		if v := p.Labels[l]; v != "" {
			return v
		}
	}
	return p.Name
}

func metricsPort(p *corev1.Pod) int32 {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == MetricsPortName {
				return port.ContainerPort
			}
		}
	}
	return DefaultMetricsPort
}
