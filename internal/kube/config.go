// Package kube is the exporter's Kubernetes side: client configuration,
// discovery of Flux kinds through their CRDs, and informer caches that hold
// compact records instead of full objects.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientOptions are the --kube.* flags.
type ClientOptions struct {
	Kubeconfig string
	Context    string
	QPS        float32
	Burst      int
	UserAgent  string
}

// RESTConfig resolves the client configuration in the order kubectl users
// expect from an in-cluster tool: an explicit --kube.config, $KUBECONFIG,
// the in-cluster service account, then ~/.kube/config. It returns where the
// configuration came from so that start-up logs can say it.
func RESTConfig(opts ClientOptions) (*rest.Config, string, error) {
	cfg, source, err := resolve(opts)
	if err != nil {
		return nil, "", err
	}
	if opts.QPS > 0 {
		cfg.QPS = opts.QPS
	}
	if opts.Burst > 0 {
		cfg.Burst = opts.Burst
	}
	if opts.UserAgent != "" {
		cfg.UserAgent = opts.UserAgent
	}
	return cfg, source, nil
}

func resolve(opts ClientOptions) (*rest.Config, string, error) {
	if opts.Kubeconfig != "" {
		cfg, err := fromFile(opts.Kubeconfig, opts.Context)
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %q from --kube.config: %w; pass a readable kubeconfig with --kube.config", opts.Kubeconfig, err)
		}
		return cfg, "--kube.config " + opts.Kubeconfig, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		// $KUBECONFIG may be a path list; clientcmd merges it as kubectl does.
		rules := &clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: opts.Context}).ClientConfig()
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig from $KUBECONFIG=%q: %w; fix it or pass --kube.config", env, err)
		}
		return cfg, "$KUBECONFIG " + env, nil
	}
	cfg, err := rest.InClusterConfig()
	if err == nil {
		if opts.Context != "" {
			return nil, "", errors.New("--kube.context was set but the exporter runs in-cluster without a kubeconfig; pass --kube.config too")
		}
		return cfg, "in-cluster service account", nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", fmt.Errorf("in-cluster config: %w", err)
	}
	home, herr := os.UserHomeDir()
	if herr == nil {
		path := filepath.Join(home, ".kube", "config")
		if _, serr := os.Stat(path); serr == nil {
			cfg, err := fromFile(path, opts.Context)
			if err != nil {
				return nil, "", fmt.Errorf("kubeconfig %q: %w; fix it or pass --kube.config", path, err)
			}
			return cfg, path, nil
		}
	}
	return nil, "", errors.New("no Kubernetes client configuration found: pass --kube.config, set $KUBECONFIG, or run in a cluster")
}

func fromFile(path, context string) (*rest.Config, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}

// WaitForServer polls the API server's version endpoint until it answers or
// timeout passes, logging each failed attempt, so that an exporter started
// alongside a restarting API server does not exit on its first try.
func WaitForServer(ctx context.Context, cfg *rest.Config, timeout time.Duration, logger *slog.Logger) (string, error) {
	probe := rest.CopyConfig(cfg)
	probe.Timeout = 5 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(probe)
	if err != nil {
		return "", fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := dc.ServerVersion()
		if err == nil {
			return v.GitVersion, nil
		}
		logger.Warn("Kubernetes API server not reachable yet", "host", cfg.Host, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("API server %s unreachable after %s: %w; check the kubeconfig/network, or raise --kube.startup-timeout", cfg.Host, timeout, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
