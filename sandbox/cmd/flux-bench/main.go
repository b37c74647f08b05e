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
	"encoding/json"
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
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// freePorts picks two free loopback ports. Another process could take one
// before the exporter binds it; the exporter would then fail to start and
// the run would stop with its log.
func freePorts() (int, int, error) {
	var ports [2]int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
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

// sequentialScrapes times cfg.scrapes complete scrapes with gzip, then as
// many without, into res.
func sequentialScrapes(ctx context.Context, cfg *config, t *target, s *scraper, res *result) error {
	for _, gz := range []bool{true, false} {
		for range cfg.scrapes {
			sc, err := s.scrape(ctx, gz)
			if err != nil {
				return err
			}
			if err := checkComplete(sc, t, cfg.objects); err != nil {
				return err
			}
			if gz {
				res.gzip = append(res.gzip, sc.took)
				res.gzipBytes = len(sc.body)
				res.gzipEncoding = sc.encoding
			} else {
				res.plain = append(res.plain, sc.took)
				res.plainBytes = len(sc.body)
			}
		}
	}
	return nil
}

// binVersion is the first line the binary prints about its version.
func binVersion(ctx context.Context, t *target) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, t.bin, t.versionArg).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

// waitComplete scrapes back to back until every object is in the answer and
// records the time since the process started.
func waitComplete(ctx context.Context, cfg *config, t *target, p *proc, s *scraper, res *result) (string, error) {
	deadline := time.Now().Add(cfg.readyTimeout)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return "", fmt.Errorf("exited before serving a complete scrape (%v); its log ends:\n%s", p.waitErr, p.log.tail())
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		url := p.metricsURL(t)
		if url == "" {
			continue
		}
		s.url = url
		sc, err := s.scrape(ctx, true)
		if err != nil {
			last = err.Error()
			continue
		}
		plain, err := decode(sc.body, sc.encoding)
		if err != nil {
			return "", err
		}
		total, info := countSamples(plain, t.infoSuffix)
		switch {
		case info == cfg.objects:
			res.startup = sc.end.Sub(p.started)
			res.samples = total
			res.contentType = sc.contentType
			if cfg.saveScrapes != "" {
				path := filepath.Join(cfg.saveScrapes, t.name+".txt")
				if err := os.MkdirAll(cfg.saveScrapes, 0o755); err != nil {
					return "", fmt.Errorf("save the scrape: %w", err)
				}
				if err := os.WriteFile(path, plain, 0o644); err != nil {
					return "", fmt.Errorf("save the scrape: %w", err)
				}
			}
			return url, nil
		case info > cfg.objects:
			return "", fmt.Errorf("%d series in families ending in %s for %d objects: the exporter or its config reports an object twice", info, t.infoSuffix, cfg.objects)
		}
		last = fmt.Sprintf("%d of %d objects", info, cfg.objects)
	}
	return "", fmt.Errorf("no complete scrape within %s (last: %s); its log ends:\n%s", cfg.readyTimeout, last, p.log.tail())
}

// checkComplete fails on an answer that is not a full scrape of the fleet.
func checkComplete(sc *scrape, t *target, objects int) error {
	plain, err := decode(sc.body, sc.encoding)
	if err != nil {
		return err
	}
	if _, info := countSamples(plain, t.infoSuffix); info != objects {
		return fmt.Errorf("incomplete scrape: %d of %d objects", info, objects)
	}
	return nil
}

// concurrentRound starts cfg.concurrent scrapes at once, as several
// Prometheus servers (an HA pair, a federation, an agent) would, and returns
// the wall time until the last one has been read.
func concurrentRound(ctx context.Context, s *scraper, t *target, cfg *config) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, cfg.concurrent)
	gate := make(chan struct{})
	for i := range cfg.concurrent {
		wg.Go(func() {
			<-gate
			sc, err := s.scrape(ctx, true)
			if err == nil {
				err = checkComplete(sc, t, cfg.objects)
			}
			errs[i] = err
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("concurrent round: %w", err)
	}
	return time.Since(start), nil
}

var gitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}

// flipTarget is the object whose Ready condition the freshness test flips.
type flipTarget struct {
	namespace, name string
	client          dynamic.ResourceInterface
}

// pickFlip takes the first Ready, unsuspended GitRepository of the fleet.
func pickFlip(f *fleet.Fleet) (*flipTarget, error) {
	for _, o := range f.Objects {
		if o.Kind == fleet.KindGitRepository && o.State == fleet.StateReady && !o.Suspended {
			return &flipTarget{namespace: o.Namespace(), name: o.Name()}, nil
		}
	}
	return nil, errors.New("the fleet has no Ready, unsuspended GitRepository to flip: use more --objects")
}

// setReady rewrites the object's Ready condition as source-controller would
// after a failed or a successful fetch.
func setReady(u *unstructured.Unstructured, status string, now time.Time) error {
	conds, _, err := unstructured.NestedSlice(u.Object, "status", "conditions")
	if err != nil {
		return fmt.Errorf("read conditions: %w", err)
	}
	reason, msg := "Succeeded", "stored artifact for revision"
	if status == "False" {
		reason, msg = "GitOperationFailed", "failed to checkout and determine revision"
	}
	found := false
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		m["status"], m["reason"], m["message"] = status, reason, msg
		m["lastTransitionTime"] = now.UTC().Format(time.RFC3339)
		found = true
	}
	if !found {
		return errors.New("no Ready condition")
	}
	return unstructured.SetNestedSlice(u.Object, conds, "status", "conditions")
}

// freshness flips the object's Ready condition cfg.freshness times and, each
// time, scrapes back to back until the new status shows, timing from just
// before the status write to the end of the first scrape that shows it.
func freshness(ctx context.Context, cfg *config, t *target, s *scraper, flip *flipTarget) ([]time.Duration, error) {
	// Each flip is bounded; a change that takes longer is not fresh.
	const perFlip = 5 * time.Minute
	var out []time.Duration
	for i := range cfg.freshness {
		u, err := flip.client.Get(ctx, flip.name, metav1.GetOptions{})
		if err != nil {
			return out, fmt.Errorf("get GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		current, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		want := "False"
		if readyOf(current) == "False" {
			want = "True"
		}
		if err := setReady(u, want, time.Now()); err != nil {
			return out, fmt.Errorf("GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		start := time.Now()
		if _, err := flip.client.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			return out, fmt.Errorf("update status of GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		for {
			if time.Since(start) > perFlip {
				return out, fmt.Errorf("flip %d: ready=%q not seen within %s", i+1, want, perFlip)
			}
			sc, err := s.scrape(ctx, true)
			if err != nil {
				return out, err
			}
			plain, err := decode(sc.body, sc.encoding)
			if err != nil {
				return out, err
			}
			got, ok, err := findLabel(plain, t.readyFamily, t.readyMatch, "ready")
			if err != nil {
				return out, err
			}
			if ok && got == want {
				out = append(out, sc.end.Sub(start))
				break
			}
		}
	}
	return out, nil
}

func readyOf(conds []any) string {
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// scraper sends the requests a Prometheus would send.
type scraper struct {
	client  *http.Client
	url     string
	timeout time.Duration
}

type scrape struct {
	body        []byte // as received, compressed or not
	encoding    string
	contentType string
	took        time.Duration // request sent to body read
	end         time.Time
}

func (s *scraper) scrape(ctx context.Context, gz bool) (*scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape request: %w", err)
	}
	req.Header.Set("Accept", promAccept)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	req.Header.Set("User-Agent", "flux-bench")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(s.timeout.Seconds(), 'f', -1, 64))
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	end := time.Now()
	if err != nil {
		return nil, fmt.Errorf("read scrape of %s: %w", s.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s: %.200s", s.url, resp.Status, body)
	}
	return &scrape{body: body, encoding: resp.Header.Get("Content-Encoding"),
		contentType: resp.Header.Get("Content-Type"), took: end.Sub(start), end: end}, nil
}

func readMemory(pid int) (procMemory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return procMemory{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	m, err := parseProcStatus(string(b))
	if err != nil {
		return m, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return m, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// proc is a running exporter.
type proc struct {
	cmd     *exec.Cmd
	log     *logSink
	started time.Time
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

func startProc(bin string, args []string) (*proc, error) {
	p := &proc{log: &logSink{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Its own process group, so that Ctrl-C reaches only this program,
	// which then stops the exporter itself; and SIGKILL should this program
	// die without cleaning up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// metricsURL is the target's /metrics once it is known.
func (p *proc) metricsURL(t *target) string {
	if t.listen != "" {
		return "http://" + t.listen + "/metrics"
	}
	if addr := p.log.listenAddress(); addr != "" {
		return "http://" + addr + "/metrics"
	}
	return ""
}

// stop sends SIGTERM, and SIGKILL after 15 seconds.
func (p *proc) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s ignored SIGTERM for 15s and was killed", filepath.Base(p.cmd.Path))
	}
}

// logSink keeps the end of a process's output, for error messages, and
// watches it for the line saying where flux_exporter listens.
type logSink struct {
	mu      sync.Mutex
	buf     []byte
	partial []byte
	listen  string
}

// logTail bounds what is kept of an exporter's log.
const logTail = 16 << 10

func (l *logSink) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	if len(l.buf) > 2*logTail {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-logTail:]...)
	}
	if l.listen == "" {
		l.partial = append(l.partial, b...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			if addr := listenLine(l.partial[:i]); addr != "" {
				l.listen, l.partial = addr, nil
				break
			}
			l.partial = l.partial[i+1:]
		}
		if len(l.partial) > logTail { // a line this long is not the one wanted
			l.partial = nil
		}
	}
	return len(b), nil
}

// listenLine returns the address of flux_exporter's metrics listener from
// its JSON "Listening on" log line; the events listener, when enabled, logs
// the same message with a listener key.
func listenLine(line []byte) string {
	if !bytes.Contains(line, []byte("Listening on")) {
		return ""
	}
	var l struct{ Msg, Address, Listener string }
	if json.Unmarshal(line, &l) != nil || l.Msg != "Listening on" || l.Listener != "" {
		return ""
	}
	return l.Address
}

func (l *logSink) listenAddress() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listen
}

func (l *logSink) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return string(b)
}
