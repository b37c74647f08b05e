package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
)

// scale is how much faster than Flux's defaults the controllers run: the
// fixtures are replayed at this scale.
const scale = 60

// pace are the flags that run the controllers at 1/scale of Flux's
// default delays (fluxcd/pkg/runtime/controller rate_limiter.go: 750ms to
// 15m; --requeue-dependency 30s in kustomize- and helm-controller main.go).
var pace = []string{"--min-retry-delay=12500us", "--max-retry-delay=15s"}

// world is everything a scenario runs against.
type world struct {
	logger      *slog.Logger
	srv         *apiserver.Server
	kc          kubernetes.Interface
	dyn         dynamic.Interface
	dir         string
	git         *gitServer
	charts      *chartRepo
	controllers []*controller
}

func startWorld(ctx context.Context, logger *slog.Logger) (w *world, err error) {
	w = &world{logger: logger}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.stop(true))
		}
	}()
	if w.dir, err = os.MkdirTemp("", "flux-record-"); err != nil {
		return w, fmt.Errorf("temporary directory: %w", err)
	}
	logger.Info("starting API server (full mode)")
	if w.srv, err = apiserver.Start(ctx, apiserver.Options{Mode: apiserver.ModeFull}); err != nil {
		return w, fmt.Errorf("start API server: %w", err)
	}
	if err := w.srv.InstallFluxCRDs(ctx); err != nil {
		return w, fmt.Errorf("install Flux CRDs: %w", err)
	}
	if w.kc, err = kubernetes.NewForConfig(w.srv.RESTConfig()); err != nil {
		return w, fmt.Errorf("client: %w", err)
	}
	if w.dyn, err = dynamic.NewForConfig(w.srv.RESTConfig()); err != nil {
		return w, fmt.Errorf("client: %w", err)
	}
	if err := w.namespace(ctx, "flux-system"); err != nil {
		return w, err
	}
	if w.git, err = startGit(ctx, filepath.Join(w.dir, "git")); err != nil {
		return w, err
	}
	if w.charts, err = startCharts(filepath.Join(w.dir, "charts")); err != nil {
		return w, err
	}
	return w, w.startControllers(ctx)
}

func (w *world) startControllers(ctx context.Context) error {
	kubeconfig := filepath.Join(w.dir, "kubeconfig")
	if err := w.srv.WriteKubeconfig(kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	addrs, err := freeAddrs(1)
	if err != nil {
		return err
	}
	storage := addrs[0]
	if err := os.MkdirAll(filepath.Join(w.dir, "storage"), 0o755); err != nil {
		return fmt.Errorf("artifact storage: %w", err)
	}
	specs := []struct {
		name string
		args []string
	}{
		{"source-controller", []string{"--storage-path=" + filepath.Join(w.dir, "storage"),
			"--storage-addr=" + storage, "--storage-adv-addr=" + storage}},
		{"kustomize-controller", []string{"--no-remote-bases=true", "--requeue-dependency=500ms"}},
		{"helm-controller", []string{"--requeue-dependency=500ms"}},
	}
	for _, s := range specs {
		c, err := startController(ctx, w.logger, kubeconfig, s.name, append(s.args, pace...))
		if err != nil {
			return err
		}
		w.controllers = append(w.controllers, c)
	}
	return nil
}

func (w *world) namespace(ctx context.Context, name string) error {
	_, err := w.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// stop ends the controllers first (they must not outlive the server),
// then the servers; showLogs prints the controllers' output.
func (w *world) stop(showLogs bool) error {
	var errs []error
	for _, c := range w.controllers {
		errs = append(errs, c.stop())
		if showLogs {
			fmt.Fprintf(os.Stderr, "--- %s logs ---\n%s\n", c.name, c.logs.String())
		}
	}
	if w.git != nil {
		errs = append(errs, w.git.close())
	}
	if w.charts != nil {
		errs = append(errs, w.charts.close())
	}
	if w.srv != nil {
		errs = append(errs, w.srv.Stop())
	}
	if w.dir != "" {
		errs = append(errs, os.RemoveAll(w.dir))
	}
	return errors.Join(errs...)
}
