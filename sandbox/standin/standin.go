// Package standin runs stand-ins for Flux controllers: a real
// controller-runtime manager that reconciles Flux kinds on an API server and
// records gotk_reconcile_duration_seconds as Flux controllers do, and the
// Deployments and Pods, labelled as Flux's install labels them, that point
// flux_exporter at the manager's metrics on 127.0.0.1.
//
// controller-runtime keeps its metrics in one process-wide registry, so all
// stand-ins of a process share one manager; each stand-in's endpoint serves
// the view of its own reconcilers (see MetricsHandler).
package standin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// Namespace is where Flux installs its controllers.
	Namespace = "flux-system"
	// PodIP is every stand-in pod's IP: the exporter dials it directly.
	PodIP = "127.0.0.1"
	// FailPrefix makes a reconcile of an object whose name starts with it
	// fail, so that error and retry counters move.
	FailPrefix = "broken-"
)

// Reconciler is one controller-runtime controller of the manager.
type Reconciler struct {
	// Name is controller-runtime's controller name, which Flux derives
	// from the kind: "gitrepository".
	Name string
	GVK  schema.GroupVersionKind
	// Reconcile replaces the stand-in reconcile when set, for tests that
	// need a controller to misbehave (hang, fail).
	Reconcile reconcile.Func
}

// reconcileDuration mirrors the histogram of fluxcd/pkg/runtime/metrics,
// with its per-object labels; like Flux, Reconcile deletes an object's
// series when the object is gone.
var reconcileDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name: "gotk_reconcile_duration_seconds",
	Help: "The duration in seconds of a GitOps Toolkit resource reconciliation.",
	// The buckets of fluxcd/pkg runtime/metrics: 10ms to 30 minutes.
	Buckets: prometheus.ExponentialBucketsRange(10e-3, 1800, 10),
}, []string{"kind", "name", "namespace"})

var registerOnce sync.Once

// RunManager starts a manager on cfg with one reconciler per entry and
// returns once its caches have synced. It stops when ctx is done; the
// returned channel then yields Start's result.
func RunManager(ctx context.Context, cfg *rest.Config, reconcilers ...Reconciler) (<-chan error, error) {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(reconcileDuration)
		// The manager logs through controller-runtime's global logger,
		// which otherwise complains once that it was never set.
		log.SetLogger(logr.Discard())
	})
	skip := true
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		// MetricsHandler serves the registry instead, on its own listener
		// whose port the caller learns.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Tests may start more than one manager per process.
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	for _, r := range reconcilers {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(r.GVK)
		var rec reconcile.Reconciler = &reconciler{client: mgr.GetClient(), gvk: r.GVK}
		if r.Reconcile != nil {
			rec = r.Reconcile
		}
		if err := ctrl.NewControllerManagedBy(mgr).Named(r.Name).For(obj).Complete(rec); err != nil {
			return nil, fmt.Errorf("add reconciler %s: %w", r.Name, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		return nil, errors.Join(errors.New("manager caches did not sync within a minute"), ctx.Err())
	}
	return done, nil
}

type reconciler struct {
	client client.Client
	gvk    schema.GroupVersionKind
}

// Reconcile reads the object, as a Flux controller first does, and records
// how long that took under the object's own labels. Once the object is
// gone, its series goes too, as in Flux: fluxcd/pkg runtime/controller's
// Metrics.RecordDuration calls the recorder's DeleteDuration when it sees
// the object being deleted with the controller's finalizer removed. The
// stand-in sets no finalizer, so it learns of the deletion by not finding
// the object.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	start := time.Now()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(r.gvk)
	if err := r.client.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			reconcileDuration.DeleteLabelValues(r.gvk.Kind, req.Name, req.Namespace)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get %s %s: %w", r.gvk.Kind, req.NamespacedName, err)
	}
	reconcileDuration.WithLabelValues(r.gvk.Kind, req.Name, req.Namespace).Observe(time.Since(start).Seconds())
	if strings.HasPrefix(req.Name, FailPrefix) {
		return ctrl.Result{}, fmt.Errorf("%s %s: stand-in failure", r.gvk.Kind, req.NamespacedName)
	}
	return ctrl.Result{}, nil
}

// MetricsHandler serves controller-runtime's registry as one controller pod
// would: series of other stand-ins' reconcilers (their controller label or
// gotk kind) are left out; process, Go and client metrics are shared.
func MetricsHandler(reconcilers ...Reconciler) http.Handler {
	var names, kinds []string
	for _, r := range reconcilers {
		names = append(names, r.Name)
		kinds = append(kinds, r.GVK.Kind)
	}
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		fams, err := metrics.Registry.Gather()
		for _, f := range fams {
			f.Metric = slices.DeleteFunc(f.Metric, func(m *dto.Metric) bool {
				for _, lp := range m.GetLabel() {
					switch {
					case lp.GetName() == "controller" && !slices.Contains(names, lp.GetValue()):
						return true
					case f.GetName() == reconcileDurationName && lp.GetName() == "kind" && !slices.Contains(kinds, lp.GetValue()):
						return true
					}
				}
				return false
			})
		}
		return slices.DeleteFunc(fams, func(f *dto.MetricFamily) bool { return len(f.Metric) == 0 }), err
	})
	return promhttp.HandlerFor(gather, promhttp.HandlerOpts{})
}

const reconcileDurationName = "gotk_reconcile_duration_seconds"

// Labels are the labels Flux's install puts on a controller's Deployment,
// pod template and Pods.
func Labels(controller, version string) map[string]string {
	return map[string]string{
		"app":                         controller,
		"app.kubernetes.io/component": controller,
		"app.kubernetes.io/instance":  Namespace,
		"app.kubernetes.io/part-of":   "flux",
		"app.kubernetes.io/version":   version,
		"control-plane":               "controller",
	}
}

// ServiceAccount is the controller's account; Pods name it, and the API
// server admits a Pod only when it exists.
func ServiceAccount(controller string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: controller, Labels: Labels(controller, "")}}
}

// Deployment is the controller's Deployment as Flux's install writes it.
func Deployment(controller, version, image string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: controller, Labels: Labels(controller, version)},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": controller}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: Labels(controller, version)},
				Spec:       podSpec(controller, image, 8080),
			},
		},
	}
}

// Pod is one of the controller's Pods with its metrics port, named
// http-prom as in Flux's install, set to port on PodIP.
func Pod(controller, name, version, image string, port int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: Labels(controller, version)},
		Spec:       podSpec(controller, image, port),
	}
}

func podSpec(controller, image string, port int32) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName: controller,
		Containers: []corev1.Container{{
			Name:  "manager",
			Image: image,
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
				{Name: "http-prom", ContainerPort: port, Protocol: corev1.ProtocolTCP},
				{Name: "healthz", ContainerPort: 9440, Protocol: corev1.ProtocolTCP},
			},
		}},
	}
}

// SetPodStatus writes the status the kubelet would: Running on PodIP, with
// the Ready condition and the containers' readiness as given.
func SetPodStatus(ctx context.Context, c kubernetes.Interface, name string, ready bool) error {
	pods := c.CoreV1().Pods(Namespace)
	pod, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", name, err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	// kubectl's READY column counts ready containers, not the condition.
	var containers []corev1.ContainerStatus
	started := true
	for _, c := range pod.Spec.Containers {
		containers = append(containers, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	pod.Status = corev1.PodStatus{
		ContainerStatuses: containers,
		Phase:             corev1.PodRunning,
		HostIP:            PodIP,
		PodIP:             PodIP,
		PodIPs:            []corev1.PodIP{{IP: PodIP}},
		StartTime:         &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		},
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of pod %s: %w", name, err)
	}
	return nil
}

// SetDeploymentStatus writes the status the Deployment controller would:
// replicas pods exist, ready of them ready and available, updated of them at
// the current template.
func SetDeploymentStatus(ctx context.Context, c kubernetes.Interface, name string, replicas, updated, ready int32) error {
	deployments := c.AppsV1().Deployments(Namespace)
	d, err := deployments.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get deployment %s: %w", name, err)
	}
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            replicas,
		UpdatedReplicas:     updated,
		ReadyReplicas:       ready,
		AvailableReplicas:   ready,
		UnavailableReplicas: max(0, replicas-ready),
	}
	if _, err := deployments.UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of deployment %s: %w", name, err)
	}
	return nil
}
