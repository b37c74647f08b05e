package standin

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// FluxVersion is the Flux release the stand-ins pose as, on their
// Deployments, Pods and the Flux CRDs.
const FluxVersion = "v2.7.3"

// Controller is a Flux controller played by a stand-in: the Deployment and
// Pod Flux's install would create, and the reconcilers whose metrics the Pod
// serves.
type Controller struct {
	Name        string // the Deployment's name, e.g. "source-controller"
	Image       string
	Reconcilers []Reconciler
}

// FluxControllers are the controllers of FluxVersion that reconcile the
// main Flux kinds, at the API versions the embedded CRDs serve. Images are
// those of the components the release ships with.
func FluxControllers() []Controller {
	gvk := func(group, version, kind string) Reconciler {
		return Reconciler{Name: strings.ToLower(kind), GVK: schema.GroupVersionKind{Group: group, Version: version, Kind: kind}}
	}
	const (
		source       = "source.toolkit.fluxcd.io"
		kustomize    = "kustomize.toolkit.fluxcd.io"
		helm         = "helm.toolkit.fluxcd.io"
		notification = "notification.toolkit.fluxcd.io"
	)
	return []Controller{
		{Name: "source-controller", Image: "ghcr.io/fluxcd/source-controller:v1.7.3", Reconcilers: []Reconciler{
			gvk(source, "v1", "GitRepository"), gvk(source, "v1", "OCIRepository"), gvk(source, "v1", "HelmRepository"),
			gvk(source, "v1", "HelmChart"), gvk(source, "v1", "Bucket"),
		}},
		{Name: "kustomize-controller", Image: "ghcr.io/fluxcd/kustomize-controller:v1.7.2", Reconcilers: []Reconciler{
			gvk(kustomize, "v1", "Kustomization"),
		}},
		{Name: "helm-controller", Image: "ghcr.io/fluxcd/helm-controller:v1.4.3", Reconcilers: []Reconciler{
			gvk(helm, "v2", "HelmRelease"),
		}},
		// Since v1.1 notification-controller reconciles only Receivers;
		// Alerts and Providers are read when events arrive.
		{Name: "notification-controller", Image: "ghcr.io/fluxcd/notification-controller:v1.7.4", Reconcilers: []Reconciler{
			gvk(notification, "v1", "Receiver"),
		}},
	}
}

// Running is a set of stand-in controllers started by Start.
type Running struct {
	// Endpoints maps each controller to its metrics address on PodIP.
	Endpoints map[string]string

	stopManager context.CancelFunc
	managerDone <-chan error
	servers     []*http.Server
}

// Start makes the given controllers look installed on a full API server,
// as Flux's install leaves them: one manager reconciles all their kinds on
// cfg, each controller's metrics are served on its own port on PodIP, and
// Namespace gets each controller's ServiceAccount, a Deployment with one
// ready replica and a Running, Ready Pod whose http-prom port is that
// metrics port. The manager stops when ctx is done or on Stop, which waits
// for it; the API objects stay.
func Start(ctx context.Context, cfg *rest.Config, version string, controllers []Controller) (running *Running, err error) {
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	mctx, cancel := context.WithCancel(ctx)
	r := &Running{Endpoints: map[string]string{}, stopManager: cancel}
	defer func() {
		if err != nil {
			err, running = errors.Join(err, r.Stop()), nil
		}
	}()
	var all []Reconciler
	for _, c := range controllers {
		all = append(all, c.Reconcilers...)
	}
	if r.managerDone, err = RunManager(mctx, cfg, all...); err != nil {
		return r, err
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return r, fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	for _, c := range controllers {
		port, err := r.serve(c)
		if err != nil {
			return r, err
		}
		if err := publish(ctx, kc, c, version, port); err != nil {
			return r, err
		}
	}
	return r, nil
}

// serve listens for the controller's metrics on PodIP, port 0.
func (r *Running) serve(c Controller) (int32, error) {
	ln, err := net.Listen("tcp", PodIP+":0")
	if err != nil {
		return 0, fmt.Errorf("listen for %s metrics: %w", c.Name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(c.Reconcilers...))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.servers = append(r.servers, srv)
	r.Endpoints[c.Name] = ln.Addr().String()
	return int32(ln.Addr().(*net.TCPAddr).Port), nil
}

// publish creates the controller's objects and writes the statuses the
// kubelet and the Deployment controller would, which this server lacks.
func publish(ctx context.Context, kc kubernetes.Interface, c Controller, version string, port int32) error {
	create := metav1.CreateOptions{}
	if _, err := kc.CoreV1().ServiceAccounts(Namespace).Create(ctx, ServiceAccount(c.Name), create); err != nil {
		return fmt.Errorf("create service account %s: %w", c.Name, err)
	}
	if _, err := kc.AppsV1().Deployments(Namespace).Create(ctx, Deployment(c.Name, version, c.Image, 1), create); err != nil {
		return fmt.Errorf("create deployment %s: %w", c.Name, err)
	}
	pod := Pod(c.Name, podName(c.Name), version, c.Image, port)
	if _, err := kc.CoreV1().Pods(Namespace).Create(ctx, pod, create); err != nil {
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	if err := SetPodStatus(ctx, kc, pod.Name, true); err != nil {
		return err
	}
	return SetDeploymentStatus(ctx, kc, c.Name, 1, 1, 1)
}

// podName looks like a Deployment's pod name, <name>-<template hash>-<suffix>,
// and is the same on every run.
func podName(controller string) string {
	return controller + "-" + nameHash(controller, 10) + "-" + nameHash(controller+"/pod", 5)
}

// nameHash spells a hash of s in the alphabet Kubernetes uses for generated
// names, which has no vowels and no 0, 1 or 3.
func nameHash(s string, n int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	h := fnv.New64a()
	h.Write([]byte(s))
	sum := h.Sum64()
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[sum%uint64(len(alphabet))]
		sum /= uint64(len(alphabet))
	}
	return string(b)
}

// Stop stops the manager and the metrics servers. It may be called more
// than once.
func (r *Running) Stop() error {
	r.stopManager()
	var errs []error
	for _, srv := range r.servers {
		if err := srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close metrics server: %w", err))
		}
	}
	r.servers = nil
	if r.managerDone != nil {
		select {
		case err, ok := <-r.managerDone:
			if ok && err != nil {
				errs = append(errs, fmt.Errorf("controller-runtime manager: %w", err))
			}
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("controller-runtime manager did not stop within 30s"))
		}
		r.managerDone = nil
	}
	return errors.Join(errs...)
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// LabelCRDs labels every Flux CRD on the server as Flux's install does, so
// that the exporter reads the distribution's version from them.
func LabelCRDs(ctx context.Context, cfg *rest.Config, version string) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	crds := dyn.Resource(crdGVR)
	list, err := crds.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list CRDs: %w", err)
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{"app.kubernetes.io/instance":%q,"app.kubernetes.io/part-of":"flux","app.kubernetes.io/version":%q}}}`,
		Namespace, version)
	n := 0
	for _, crd := range list.Items {
		if !strings.HasSuffix(crd.GetName(), ".fluxcd.io") {
			continue
		}
		if _, err := crds.Patch(ctx, crd.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("label CRD %s: %w", crd.GetName(), err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no Flux CRDs to label")
	}
	return nil
}
