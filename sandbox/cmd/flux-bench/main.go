// Command flux-bench runs flux_exporter and kube-state-metrics side by side
// over the same Flux fleet and prints what scraping each costs, as a
// Prometheus would scrape them: a full HTTP scrape with Prometheus's Accept
// header, with and without gzip.
//
// In one run it starts a CRD-mode in-process API server (sandbox/apiserver),
// applies a generated fleet of --objects Flux objects (seed fixed), writes a
// kubeconfig, and then, for each exporter in turn: starts the real binary,
// waits for its first complete scrape (one info series per object), times
// sequential scrapes, reads its memory from /proc, runs a round of
// concurrent scrapes, and measures freshness by flipping a GitRepository's
// Ready condition through the status subresource and scraping until the
// change shows. The exporters run one at a time so that neither competes
// with the other for the CPU. It prints one table, and removes every process
// and file it made, also on Ctrl-C and on error. docs/performance.md says
// what each figure means.
//
// Usage (from the sandbox module; `make bench` and `make bench-100k` run it):
//
//	go run ./cmd/flux-bench [flags]
//
//	--objects N          Flux objects in the fleet (10000)
//	--namespaces N       namespaces to spread them over (0: objects/500, at least 5)
//	--seed N             fleet seed (42)
//	--exporter PATH      flux_exporter binary; empty builds the repository's into a temporary directory
//	--ksm PATH           kube-state-metrics binary (<repository>/.bin/kube-state-metrics, which make bench builds)
//	--ksm-config PATH    custom-resource-state config (<repository>/sandbox/bench/ksm-flux.yaml)
//	--ksm-gzip           run kube-state-metrics with --enable-gzip-encoding (true; its default is off)
//	--scrapes N          sequential scrapes per encoding (20, at least 20)
//	--concurrent N       scrapes in the concurrent round (10)
//	--freshness N        Ready flips timed per exporter (20, at least 20)
//	--scrape-timeout D   bound of one scrape, also sent as X-Prometheus-Scrape-Timeout-Seconds (10m)
//	--ready-timeout D    bound of the wait for an exporter's first complete scrape (10m)
//	--timeout D          bound of the whole run (90m)
//	--save-scrapes DIR   write each exporter's first complete scrape to DIR/<name>.txt
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

const rootModule = "github.com/flux-exporter/flux_exporter"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	objects       int
	namespaces    int
	seed          int64
	exporter      string
	ksm           string
	ksmConfig     string
	ksmGzip       bool
	scrapes       int
	concurrent    int
	freshness     int
	scrapeTimeout time.Duration
	readyTimeout  time.Duration
	timeout       time.Duration
	saveScrapes   string
	// buildRoot, when set, is the repository whose flux_exporter the run
	// builds because --exporter was left empty.
	buildRoot string
}

// minObjects keeps the fleet large enough to hold every kind and a Ready,
// unsuspended GitRepository to flip.
const minObjects = 100

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("flux-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.objects, "objects", 10000, "Flux objects in the fleet")
	fs.IntVar(&c.namespaces, "namespaces", 0, "namespaces to spread them over; 0 is objects/500, at least 5")
	fs.Int64Var(&c.seed, "seed", 42, "seed of the fleet")
	fs.StringVar(&c.exporter, "exporter", "", "flux_exporter binary; empty builds the repository's into a temporary directory")
	fs.StringVar(&c.ksm, "ksm", "", "kube-state-metrics binary; empty is <repository>/.bin/kube-state-metrics")
	fs.StringVar(&c.ksmConfig, "ksm-config", "", "kube-state-metrics custom-resource-state config; empty is <repository>/sandbox/bench/ksm-flux.yaml")
	fs.BoolVar(&c.ksmGzip, "ksm-gzip", true, "run kube-state-metrics with --enable-gzip-encoding (its default is off, and then it never compresses)")
	fs.IntVar(&c.scrapes, "scrapes", 20, "sequential scrapes per encoding (gzip, plain)")
	fs.IntVar(&c.concurrent, "concurrent", 10, "scrapes started at once in the concurrent round")
	fs.IntVar(&c.freshness, "freshness", 20, "Ready flips timed per exporter")
	fs.DurationVar(&c.scrapeTimeout, "scrape-timeout", 10*time.Minute, "bound of one scrape, also sent as X-Prometheus-Scrape-Timeout-Seconds; generous, because the concurrent round's scrapes share the CPUs")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 10*time.Minute, "bound of the wait for an exporter's first complete scrape")
	fs.DurationVar(&c.timeout, "timeout", 90*time.Minute, "bound of the whole run")
	fs.StringVar(&c.saveScrapes, "save-scrapes", "", "directory to write each exporter's first complete scrape to, as <name>.txt, for inspection")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q: every setting is a flag, see --help", fs.Args()))
	}
	if c.objects < minObjects {
		errs = append(errs, fmt.Errorf("--objects %d: use at least %d, so that the fleet has every kind and a Ready GitRepository to flip", c.objects, minObjects))
	}
	if c.namespaces < 0 {
		errs = append(errs, fmt.Errorf("--namespaces %d: use 0 (automatic) or more", c.namespaces))
	}
	if c.scrapes < 20 {
		errs = append(errs, fmt.Errorf("--scrapes %d: use at least 20, so that p90 is not the slowest scrape", c.scrapes))
	}
	if c.concurrent < 1 {
		errs = append(errs, fmt.Errorf("--concurrent %d: use at least 1", c.concurrent))
	}
	if c.freshness < 20 {
		errs = append(errs, fmt.Errorf("--freshness %d: use at least 20 flips", c.freshness))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--scrape-timeout", c.scrapeTimeout}, {"--ready-timeout", c.readyTimeout}, {"--timeout", c.timeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: use a positive duration such as 2m", d.name, d.v))
		}
	}
	if c.namespaces == 0 {
		c.namespaces = max(5, c.objects/500)
	}
	return c, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "flux-bench:", line)
		}
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if err := resolvePaths(cfg); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "flux-bench:", line)
		}
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := bench(ctx, cfg, stdout, logger); err != nil {
		if ctx.Err() != nil {
			logger.Error("flux-bench stopped before it finished", "cause", context.Cause(ctx), "err", err)
		} else {
			logger.Error("flux-bench failed", "err", err)
		}
		return 1
	}
	return 0
}

// repoRoot finds the flux_exporter repository above the working directory,
// for the default paths; "" when there is none.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for range 32 { // a path has far fewer levels; the bound only guards the loop
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if strings.TrimSpace(first) == "module "+rootModule {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
	return ""
}

// resolvePaths fills in the default paths and checks that the programs the
// run needs are there, one line per missing one saying what to do.
func resolvePaths(c *config) error {
	root := repoRoot()
	var errs []error
	if root == "" && (c.exporter == "" || c.ksm == "" || c.ksmConfig == "") {
		return errors.New("not inside the flux_exporter repository: run from it, or pass --exporter, --ksm and --ksm-config")
	}
	defaultKSM := c.ksm == ""
	if defaultKSM {
		c.ksm = filepath.Join(root, ".bin", "kube-state-metrics")
	}
	if c.ksmConfig == "" {
		c.ksmConfig = filepath.Join(root, "sandbox", "bench", "ksm-flux.yaml")
	}
	switch st, err := os.Stat(c.ksm); {
	case err == nil && !st.IsDir() && st.Mode()&0o111 != 0:
	case defaultKSM:
		errs = append(errs, fmt.Errorf("kube-state-metrics not found at %s: build the pinned v2.15.0 with `make %s` in the repository (make bench does this first), or pass --ksm PATH", c.ksm, c.ksm))
	default:
		errs = append(errs, fmt.Errorf("--ksm %s is not an executable file: pass the path of a kube-state-metrics binary, or leave --ksm empty for the repository's .bin/kube-state-metrics", c.ksm))
	}
	if _, err := os.Stat(c.ksmConfig); err != nil {
		errs = append(errs, fmt.Errorf("kube-state-metrics config not found at %s: pass --ksm-config PATH (the repository's is sandbox/bench/ksm-flux.yaml)", c.ksmConfig))
	}
	if c.exporter == "" {
		if _, err := exec.LookPath(goCommand()); err != nil {
			errs = append(errs, fmt.Errorf("%s not found in PATH, needed to build flux_exporter: install Go 1.26, set GO, or pass --exporter PATH", goCommand()))
		}
		c.buildRoot = root
	} else if st, err := os.Stat(c.exporter); err != nil || st.IsDir() {
		errs = append(errs, fmt.Errorf("flux_exporter not found at %s: pass the binary's path to --exporter, or leave it empty to build the repository's", c.exporter))
	}
	for _, p := range []*string{&c.ksm, &c.ksmConfig} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	return errors.Join(errs...)
}

func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// target is one exporter under test.
type target struct {
	name string
	bin  string
	args []string
	// infoSuffix ends the name of the families with one series per object.
	infoSuffix string
	// readyFamily and readyMatch find the flipped object's info series.
	readyFamily string
	readyMatch  map[string]string
	// versionArg makes the binary print its version.
	versionArg string
	// portArgs, when set, gives the flags that make the exporter listen on
	// the two loopback ports (metrics, its own telemetry); without it the
	// exporter picks its port and says so in its "Listening on" log line.
	portArgs func(metrics, telemetry int) []string
	// listen is where portArgs made it serve its metrics.
	listen string
}

// result is what was measured of one target.
type result struct {
	version      string
	contentType  string
	startup      time.Duration
	samples      int
	gzip, plain  []time.Duration
	gzipBytes    int
	plainBytes   int
	after        procMemory // after the sequential scrapes
	beforeRound  procMemory
	afterRound   procMemory
	roundWall    time.Duration
	fresh        []time.Duration
	freshErr     error
	gzipEncoding string // Content-Encoding of the answers to gzip requests
}

func bench(ctx context.Context, cfg *config, stdout io.Writer, logger *slog.Logger) (err error) {
	tmp, err := os.MkdirTemp("", "flux-bench-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(tmp); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", tmp, rmErr))
		}
	}()
	exporterBin, err := buildExporter(ctx, cfg, tmp, logger)
	if err != nil {
		return err
	}

	start := time.Now()
	srv, err := apiserver.Start(ctx, apiserver.Options{Mode: apiserver.ModeCRD})
	if err != nil {
		return fmt.Errorf("start API server: %w", err)
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop API server: %w", stopErr))
		}
	}()
	flip, objects, namespaces, err := seedFleet(ctx, cfg, srv, logger)
	if err != nil {
		return err
	}
	loaded := time.Since(start)
	logger.Info("fleet applied", "took", loaded.Round(time.Millisecond))

	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := srv.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	flip.client = dyn.Resource(gitRepositories).Namespace(flip.namespace)
	targets := benchTargets(cfg, exporterBin, kubeconfig, flip)
	results := make([]*result, len(targets))
	for i, t := range targets {
		if results[i], err = measure(ctx, cfg, t, flip, logger); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	env := environment{
		objects: objects, namespaces: namespaces, seed: cfg.seed,
		goVersion: runtime.Version(), cpus: runtime.NumCPU(), cpuModel: cpuModel(),
		loaded: loaded, flipped: "GitRepository " + flip.namespace + "/" + flip.name,
		scrapes: cfg.scrapes, concurrent: cfg.concurrent, freshness: cfg.freshness, ksmGzip: cfg.ksmGzip,
	}
	printReport(stdout, env, targets, results)
	return nil
}

// buildExporter builds flux_exporter from cfg.buildRoot into tmp, stamped
// with the version as promu stamps it, or returns cfg.exporter when no
// module root is given.
func buildExporter(ctx context.Context, cfg *config, tmp string, logger *slog.Logger) (string, error) {
	root := cfg.buildRoot
	if root == "" {
		return cfg.exporter, nil
	}
	bin := filepath.Join(tmp, "flux_exporter")
	logger.Info("building flux_exporter", "module", root)
	start := time.Now()
	// The version as promu stamps it (.promu.yml), so the report says
	// which exporter it measured; "-dev" because this is no release build.
	stamp := "dev"
	if v, err := os.ReadFile(filepath.Join(root, "VERSION")); err == nil {
		stamp = strings.TrimSpace(string(v)) + "-dev"
	}
	build := exec.CommandContext(ctx, goCommand(), "build",
		"-ldflags", "-X github.com/prometheus/common/version.Version="+stamp, "-o", bin, ".")
	build.Dir = root
	var out bytes.Buffer
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build flux_exporter in %s: %w\n%s", root, err, out.String())
	}
	logger.Info("built flux_exporter", "took", time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// seedFleet installs the Flux CRDs and applies the generated fleet, and
// returns the GitRepository whose readiness the freshness probe flips.
func seedFleet(ctx context.Context, cfg *config, srv *apiserver.Server, logger *slog.Logger) (*flipTarget, int, int, error) {
	if err := srv.InstallFluxCRDs(ctx); err != nil {
		return nil, 0, 0, fmt.Errorf("install Flux CRDs: %w", err)
	}
	f, err := fleet.Generate(fleet.Options{Seed: cfg.seed, Objects: cfg.objects, Namespaces: cfg.namespaces})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("generate the fleet: %w", err)
	}
	flip, err := pickFlip(f)
	if err != nil {
		return nil, 0, 0, err
	}
	logger.Info("applying the fleet", "objects", len(f.Objects), "namespaces", len(f.Namespaces), "api_server", srv.URL())
	if err := applyWithProgress(ctx, srv, f, logger); err != nil {
		return nil, 0, 0, fmt.Errorf("apply the fleet: %w", err)
	}
	// The planned objects share this process with the API server and are
	// not needed any more; at 100,000 objects they hold gigabytes the
	// exporters' measurements should not compete with.
	objects, namespaces := len(f.Objects), len(f.Namespaces)
	f = nil
	debug.FreeOSMemory()
	return flip, objects, namespaces, nil
}

// benchTargets are the two exporters measured side by side.
func benchTargets(cfg *config, exporterBin, kubeconfig string, flip *flipTarget) []*target {
	return []*target{
		{
			name: "flux_exporter", bin: exporterBin, versionArg: "--version",
			args: []string{"--kube.config=" + kubeconfig, "--web.listen-address=127.0.0.1:0",
				// CRD mode has no Deployments or Pods to find controllers in.
				"--no-collector.controllers", "--log.format=json"},
			infoSuffix:  "flux_resource_info",
			readyFamily: "flux_resource_info",
			readyMatch:  map[string]string{"kind": "GitRepository", "exported_namespace": flip.namespace, "name": flip.name},
		},
		{
			name: "kube-state-metrics", bin: cfg.ksm,
			args: append([]string{"--kubeconfig=" + kubeconfig,
				"--custom-resource-state-only", "--custom-resource-state-config-file=" + cfg.ksmConfig},
				ksmGzipArgs(cfg.ksmGzip)...),
			versionArg: "version",
			// kube-state-metrics does not report the port it bound when
			// given port 0, so it gets free ports picked just before it starts.
			portArgs: func(metrics, telemetry int) []string {
				return []string{"--host=127.0.0.1", "--port=" + strconv.Itoa(metrics),
					"--telemetry-host=127.0.0.1", "--telemetry-port=" + strconv.Itoa(telemetry)}
			},
			// flux_<kind>_resource_info, one family per kind (see the config).
			infoSuffix:  "_resource_info",
			readyFamily: "flux_gitrepository_resource_info",
			readyMatch:  map[string]string{"exported_namespace": flip.namespace, "name": flip.name},
		},
	}
}

func ksmGzipArgs(on bool) []string {
	if on {
		return []string{"--enable-gzip-encoding"}
	}
	return nil
}

// applyWithProgress applies the fleet in slices, logging after each how
// far it got: 100,000 objects take many minutes. Each slice goes through
// fleet.Apply and its parallel writers; a slice only waits for the previous
// one's last writes, which costs little at these sizes.
func applyWithProgress(ctx context.Context, srv *apiserver.Server, f *fleet.Fleet, logger *slog.Logger) error {
	step := max(1000, len(f.Objects)/20)
	start := time.Now()
	for i := 0; i < len(f.Objects); i += step {
		part := &fleet.Fleet{Options: f.Options, Namespaces: f.Namespaces, Objects: f.Objects[i:min(i+step, len(f.Objects))]}
		if err := fleet.Apply(ctx, srv.RESTConfig(), part); err != nil {
			return err
		}
		done := i + len(part.Objects)
		if done < len(f.Objects) {
			logger.Info("applying the fleet", "applied", done, "of", len(f.Objects), "elapsed", time.Since(start).Round(time.Second))
		}
	}
	return nil
}

// measure runs one exporter and takes every figure of it, then stops it.
func measure(ctx context.Context, cfg *config, t *target, flip *flipTarget, logger *slog.Logger) (res *result, err error) {
	res = &result{version: binVersion(ctx, t)}
	logger.Info("starting", "exporter", t.name, "version", res.version)
	args := t.args
	if t.portArgs != nil {
		metrics, telemetry, err := freePorts()
		if err != nil {
			return nil, err
		}
		args = append(slices.Clip(args), t.portArgs(metrics, telemetry)...)
		t.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(metrics))
	}
	p, err := startProc(t.bin, args)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := p.stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()
	s := &scraper{
		client: &http.Client{
			Timeout: cfg.scrapeTimeout,
			// The requests set Accept-Encoding themselves; the transport
			// must neither add gzip nor decompress behind the timing.
			Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: cfg.concurrent},
		},
		timeout: cfg.scrapeTimeout,
	}

	// 1. Time to the first complete scrape, from the process start.
	url, err := waitComplete(ctx, cfg, t, p, s, res)
	if err != nil {
		return nil, err
	}
	s.url = url
	logger.Info("first complete scrape", "exporter", t.name, "after", res.startup.Round(time.Millisecond), "samples", res.samples)

	// 2. Sequential scrapes, gzip then plain.
	if err := sequentialScrapes(ctx, cfg, t, s, res); err != nil {
		return nil, err
	}
	if res.after, err = readMemory(p.pid()); err != nil {
		return nil, err
	}

	// 3. A round of concurrent scrapes, between two readings of VmHWM.
	if res.beforeRound, err = readMemory(p.pid()); err != nil {
		return nil, err
	}
	if res.roundWall, err = concurrentRound(ctx, s, t, cfg); err != nil {
		return nil, err
	}
	if res.afterRound, err = readMemory(p.pid()); err != nil {
		return nil, err
	}
	logger.Info("scrapes done", "exporter", t.name)

	// 4. Freshness. A failure here is reported in the table, not fatal:
	// the other figures stand.
	res.fresh, res.freshErr = freshness(ctx, cfg, t, s, flip)
	if res.freshErr != nil {
		if ctx.Err() != nil {
			return nil, res.freshErr
		}
		logger.Warn("freshness not measured", "exporter", t.name, "err", res.freshErr)
	}
	return res, nil
}
