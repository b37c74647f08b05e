// Command flux-sandbox runs a real Kubernetes API server in-process with the
// Flux CRDs installed and a realistic fleet of Flux objects that keeps
// changing, for trying the exporter without a cluster.
//
// In full mode (the default) it also plays Flux's controllers: for
// source-controller, kustomize-controller, helm-controller and
// notification-controller, a Deployment and a Running, Ready Pod in
// flux-system labelled as Flux's install labels them, whose metrics port is
// served on 127.0.0.1 by a real controller-runtime manager reconciling that
// controller's kinds on the sandbox, so the exporter's controller metrics
// show genuine values that move with the churn.
//
// It writes a kubeconfig, prints how to use it, and runs until SIGINT or
// SIGTERM, then stops the server and removes everything it wrote: its
// temporary directory, the kubeconfig and the ready file.
//
// Usage:
//
//	go run ./cmd/flux-sandbox [flags]   (from the sandbox module)
//
//	--kubeconfig-out PATH     kubeconfig to write ($TMPDIR/flux-sandbox.kubeconfig)
//	--ready-file PATH         written once the fleet is seeded, holding the kubeconfig path
//	--objects N               Flux objects to create (200)
//	--namespaces N            namespaces to spread them over (5)
//	--seed N                  seed of the fleet and of its churn (1)
//	--churn-interval DURATION time between churn ticks (3s); 0 turns churn off
//	--mode full|crd           full: kube-apiserver with Namespaces, RBAC and the
//	                          stand-in Flux controllers (default);
//	                          crd: CRDs and Flux objects only, no controllers; starts faster
//	--listen 127.0.0.1:PORT   API server address (127.0.0.1:16443, fixed so that a
//	                          kubeconfig stays valid across restarts); host must be 127.0.0.1
//	--churn-log               log every churn action (quiet by default, so that
//	                          what the demo prints stays on the screen)
//	--verbose                 debug logs, including the API server's
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
	"github.com/flux-exporter/flux_exporter/sandbox/standin"
)

// DefaultListen is a fixed port, so that a kubeconfig stays valid across
// restarts of the sandbox.
const DefaultListen = "127.0.0.1:16443"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	kubeconfig    string
	readyFile     string
	objects       int
	namespaces    int
	seed          int64
	churnInterval time.Duration
	mode          apiserver.Mode
	listen        string
	verbose       bool
	churnLog      bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("flux-sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.kubeconfig, "kubeconfig-out", filepath.Join(os.TempDir(), "flux-sandbox.kubeconfig"),
		"where to write the kubeconfig (removed on exit)")
	fs.StringVar(&c.readyFile, "ready-file", "", "file to write once the fleet is seeded (removed on exit)")
	fs.IntVar(&c.objects, "objects", 200, "number of Flux objects")
	fs.IntVar(&c.namespaces, "namespaces", 5, "number of namespaces to spread them over")
	fs.Int64Var(&c.seed, "seed", 1, "seed of the fleet and its churn")
	fs.DurationVar(&c.churnInterval, "churn-interval", 3*time.Second, "time between churn ticks; 0 turns churn off")
	mode := fs.String("mode", string(apiserver.ModeFull),
		"API server: full (kube-apiserver with RBAC, plus stand-in Flux controllers whose Deployments, Pods and metrics the exporter reads) or crd (CRDs and Flux objects only, no controllers; starts faster)")
	fs.StringVar(&c.listen, "listen", DefaultListen, "address of the API server; the host must be 127.0.0.1")
	fs.BoolVar(&c.churnLog, "churn-log", false, "log every churn action; by default churn is quiet but for errors")
	fs.BoolVar(&c.verbose, "verbose", false, "debug logs, including the API server's (and the churn log)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch m := apiserver.Mode(*mode); m {
	case apiserver.ModeCRD, apiserver.ModeFull:
		c.mode = m
	default:
		return nil, fmt.Errorf("--mode %q: want crd or full", *mode)
	}
	if err := checkListen(c.listen); err != nil {
		return nil, err
	}
	if c.objects < 1 || c.namespaces < 1 {
		return nil, fmt.Errorf("--objects and --namespaces must be at least 1")
	}
	if c.churnInterval < 0 {
		return nil, fmt.Errorf("--churn-interval must not be negative")
	}
	return c, nil
}

// checkListen allows only 127.0.0.1: the sandbox's API server lets anyone
// do anything, so it must never be reachable from another machine.
func checkListen(listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: want 127.0.0.1:PORT: %w", listen, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("--listen %q: only host 127.0.0.1 is allowed; the sandbox API server accepts every request without authentication", listen)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--listen %q: invalid port %q", listen, port)
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "flux-sandbox:", err)
		return 2
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	err = sandbox(ctx, cfg, stdout, logger)
	switch {
	case err != nil && ctx.Err() != nil:
		// Interrupted while starting: what failed was cut short on purpose.
		logger.Warn("interrupted before the sandbox was ready", "err", err)
	case err != nil:
		logger.Error("flux-sandbox failed", "err", err)
		return 1
	}
	return 0
}

func sandbox(ctx context.Context, cfg *config, stdout io.Writer, logger *slog.Logger) (err error) {
	// A ready file left by an earlier run would announce a sandbox too early.
	if cfg.readyFile != "" {
		if err := removeIfExists(cfg.readyFile); err != nil {
			return err
		}
	}
	start := time.Now()
	logger.Info("starting API server", "mode", cfg.mode, "listen", cfg.listen)
	srv, err := apiserver.Start(ctx, apiserver.Options{Mode: cfg.mode, Listen: cfg.listen, Verbose: cfg.verbose})
	if err != nil {
		return fmt.Errorf("start API server: %w", err)
	}
	defer func() {
		logger.Info("stopping API server")
		if stopErr := srv.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop API server: %w", stopErr))
		}
	}()
	logger.Info("API server ready", "url", srv.URL(), "took", time.Since(start).Round(time.Millisecond))
	f, err := seedSandbox(ctx, cfg, srv, start, logger)
	if err != nil {
		return err
	}

	var endpoints map[string]string
	if cfg.mode == apiserver.ModeFull {
		running, err := startControllers(ctx, srv.RESTConfig())
		if err != nil {
			return err
		}
		// The managers must stop while the server still answers.
		defer func() {
			logger.Info("stopping stand-in Flux controllers")
			if stopErr := running.Stop(); stopErr != nil {
				err = errors.Join(err, fmt.Errorf("stop stand-in Flux controllers: %w", stopErr))
			}
		}()
		endpoints = running.Endpoints
		logger.Info("stand-in Flux controllers running", "version", standin.FluxVersion, "took", time.Since(start).Round(time.Millisecond))
	}

	if err := srv.WriteKubeconfig(cfg.kubeconfig); err != nil {
		return err
	}
	defer removeLogged(logger, cfg.kubeconfig)

	// Churn must stop writing before the server goes away.
	defer startChurn(ctx, cfg, srv, f, logger)()

	printUsage(stdout, cfg, srv, f, endpoints)
	if cfg.readyFile != "" {
		if err := os.WriteFile(cfg.readyFile, []byte(cfg.kubeconfig+"\n"), 0o644); err != nil {
			return fmt.Errorf("write ready file: %w", err)
		}
		defer removeLogged(logger, cfg.readyFile)
	}

	<-ctx.Done()
	logger.Info("shutting down")
	return nil
}

// seedSandbox installs the Flux CRDs, labelled with the release as Flux's
// install labels them (the exporter's flux_distribution_info reads it
// there), and applies the generated fleet.
func seedSandbox(ctx context.Context, cfg *config, srv *apiserver.Server, start time.Time, logger *slog.Logger) (*fleet.Fleet, error) {
	if err := srv.InstallFluxCRDs(ctx); err != nil {
		return nil, fmt.Errorf("install Flux CRDs: %w", err)
	}
	if err := standin.LabelCRDs(ctx, srv.RESTConfig(), standin.FluxVersion); err != nil {
		return nil, err
	}
	logger.Info("Flux CRDs installed", "version", standin.FluxVersion, "took", time.Since(start).Round(time.Millisecond))
	f, err := fleet.Generate(fleet.Options{Seed: cfg.seed, Objects: cfg.objects, Namespaces: cfg.namespaces, Now: time.Now()})
	if err != nil {
		return nil, err
	}
	if err := fleet.Apply(ctx, srv.RESTConfig(), f); err != nil {
		return nil, fmt.Errorf("seed the fleet: %w", err)
	}
	logger.Info("fleet seeded", "objects", len(f.Objects), "namespaces", len(f.Namespaces), "took", time.Since(start).Round(time.Millisecond))
	return f, nil
}

// startChurn changes the fleet every --churn-interval, when set, and
// returns the function that stops it and waits until it has.
func startChurn(ctx context.Context, cfg *config, srv *apiserver.Server, f *fleet.Fleet, logger *slog.Logger) (stop func()) {
	churnCtx, stopChurn := context.WithCancel(ctx)
	churnDone := make(chan struct{})
	if cfg.churnInterval <= 0 {
		close(churnDone)
		return stopChurn
	}
	go func() {
		defer close(churnDone)
		stats, err := fleet.Churn(churnCtx, srv.RESTConfig(), f, fleet.ChurnOptions{
			Interval: cfg.churnInterval, Seed: cfg.seed, Logger: churnLogger(cfg, logger),
		})
		if err != nil {
			logger.Error("churn stopped", "err", err)
		}
		logger.Info("churn done", "stats", fmt.Sprintf("%+v", stats))
	}()
	return func() { stopChurn(); <-churnDone }
}

// startControllers runs the stand-ins of Flux's main controllers.
func startControllers(ctx context.Context, cfg *rest.Config) (*standin.Running, error) {
	// Flux controllers talk to the API server at 50 queries per second,
	// bursting to 300; client-go's default of 5 would keep a fresh fleet's
	// first reconciles queued for a minute.
	cfg.QPS, cfg.Burst = 50, 300
	running, err := standin.Start(ctx, cfg, standin.FluxVersion, standin.FluxControllers())
	if err != nil {
		return nil, fmt.Errorf("start stand-in Flux controllers: %w", err)
	}
	return running, nil
}

func printUsage(w io.Writer, cfg *config, srv *apiserver.Server, f *fleet.Fleet, endpoints map[string]string) {
	churn := "off"
	if cfg.churnInterval > 0 {
		churn = "every " + cfg.churnInterval.String()
	}
	fmt.Fprintf(w, "\nFlux sandbox: %d Flux objects in %d namespaces on a %s-mode API server at %s (seed %d, churn %s).\n\n",
		len(f.Objects), len(f.Namespaces), cfg.mode, srv.URL(), cfg.seed, churn)
	fmt.Fprint(w, f.Summary().String())
	fmt.Fprintf(w, "\nKubeconfig: %s\n\n", cfg.kubeconfig)
	fmt.Fprintf(w, "  kubectl --kubeconfig %s get gitrepositories,kustomizations,helmreleases -A\n", cfg.kubeconfig)
	fmt.Fprintf(w, "  export KUBECONFIG=%s\n\n", cfg.kubeconfig)
	if len(endpoints) > 0 {
		fmt.Fprintf(w, "Flux %s controllers (stand-ins: controller-runtime managers reconciling the fleet), in namespace %s:\n\n",
			standin.FluxVersion, standin.Namespace)
		fmt.Fprintf(w, "  kubectl --kubeconfig %s -n %s get deployments,pods -o wide\n", cfg.kubeconfig, standin.Namespace)
		for _, name := range slices.Sorted(maps.Keys(endpoints)) {
			fmt.Fprintf(w, "  %-24s http://%s/metrics\n", name, endpoints[name])
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "CRD mode: no Deployments or Pods, so no Flux controllers; --mode full (the default) runs stand-ins.\n\n")
	}
	fmt.Fprintf(w, "Press Ctrl-C to stop; the kubeconfig is removed on exit.\n\n")
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

func removeLogged(logger *slog.Logger, path string) {
	if err := removeIfExists(path); err != nil {
		logger.Warn("cleanup failed", "err", err)
	}
}

// churnLogger is the logger churn reports its actions to: a line every few
// seconds would scroll what the demo printed off the screen, so only
// warnings and errors show unless asked for.
func churnLogger(cfg *config, logger *slog.Logger) *slog.Logger {
	if cfg.churnLog || cfg.verbose {
		return logger
	}
	return slog.New(minLevel{logger.Handler(), slog.LevelWarn})
}

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
