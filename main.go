// Command flux_exporter exports Flux CD objects and controllers as
// Prometheus metrics.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	toolkit "github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/flux-exporter/flux_exporter/internal/collector"
	"github.com/flux-exporter/flux_exporter/internal/controllers"
	"github.com/flux-exporter/flux_exporter/internal/dispatch"
	"github.com/flux-exporter/flux_exporter/internal/events"
	"github.com/flux-exporter/flux_exporter/internal/kube"
	"github.com/flux-exporter/flux_exporter/internal/web"
)

const program = "flux_exporter"

func main() { os.Exit(run(os.Args[1:])) }

// config holds what the flags set.
type config struct {
	web                *toolkit.FlagConfig
	telemetryPath      *string
	disableExpMets     *bool
	maxRequests        *int
	timeoutOffset      *time.Duration
	kube               kube.ClientOptions
	startupTimeout     *time.Duration
	namespaces         *string
	excludeNS          *string
	shard, totalShards *int
	shardSet, totalSet bool
	pod, podNamespace  *string
	fluxNamespace      *string
	apiGroups          *string
	controllerSelector *string
	controllersTimeout *time.Duration
	eventsEnabled      *bool
	eventsListen       *string
	eventsWebConfig    *string
	eventsMaxBody      *units.Base2Bytes
	events             events.Config
	metricAllowlist    *string
	metricDenylist     *string
	metricOptIn        *string
	labelsAllowlist    *string
	annotsAllowlist    *string
	gotkResourceInfo   *bool
	dispatchFailures   *bool
	collectors         collector.Selection
	log                promslog.Config
}

// newApp defines the command line. Tests list its flags for the README.
func newApp() (*kingpin.Application, *config) {
	app := kingpin.New(program, "Prometheus exporter for Flux CD: every Flux object and controller, fresh on each scrape.")
	c := &config{
		web:            kingpinflag.AddFlags(app, ":9899"),
		telemetryPath:  app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String(),
		disableExpMets: app.Flag("web.disable-exporter-metrics", "Exclude the exporter's own go_*, process_* and promhttp_* metrics.").Bool(),
		maxRequests:    app.Flag("web.max-requests", "Maximum number of parallel scrape requests; 0 disables the limit.").Default("40").Int(),
		timeoutOffset:  app.Flag("web.timeout-offset", "Time taken off Prometheus's scrape timeout so the answer arrives in time.").Default("500ms").Duration(),

		startupTimeout: app.Flag("kube.startup-timeout", "How long to wait for the API server at start before exiting.").Default("30s").Duration(),
		namespaces:     app.Flag("namespaces", "Comma-separated namespaces to watch; empty watches all.").Default("").String(),
		excludeNS:      app.Flag("namespaces-exclude", "Comma-separated namespaces never to watch.").Default("").String(),
		pod:            app.Flag("pod", "Name of the exporter's own pod, from the downward API, with --pod-namespace: the shard is the pod's ordinal in its StatefulSet and --total-shards the StatefulSet's replicas, followed as they change. Needs get on pods and get, list, watch on statefulsets in that namespace.").Default("").String(),
		podNamespace:   app.Flag("pod-namespace", "Namespace of --pod, from the downward API.").Default("").String(),

		fluxNamespace:      app.Flag("flux.namespace", "Namespace of the Flux controllers, for the controllers collector.").Default("flux-system").String(),
		apiGroups:          app.Flag("flux.api-groups", "Comma-separated API groups whose Established CRDs are watched; the exporter's ClusterRole must grant get, list, watch on each (the chart and deploy/ grant the default).").Default(strings.Join(kube.DefaultAPIGroups, ",")).String(),
		controllerSelector: app.Flag("flux.controllers-selector", "Label selector of the Flux controllers' Deployments and Pods.").Default("app.kubernetes.io/part-of=flux").String(),
		controllersTimeout: app.Flag("controllers.timeout", "Longest time a scrape waits for the controller pods' /metrics; the scrape's own deadline applies when shorter.").Default(controllers.DefaultTimeout.String()).Duration(),

		eventsEnabled:   app.Flag("events.enabled", "Receive Flux events from notification-controller (generic and generic-hmac Providers) on "+events.Path+".").Default("false").Bool(),
		eventsListen:    app.Flag("events.listen-address", "Serve the events endpoint on its own address instead of the metrics listener, e.g. when metrics require basic auth a Provider cannot send.").Default("").String(),
		eventsWebConfig: app.Flag("events.web.config.file", "exporter-toolkit web config (TLS) for --events.listen-address.").Default("").String(),
	}
	app.Flag("events.hmac-key-file", "File holding the generic-hmac Provider's token; re-read when it changes. Requests without a valid X-Signature are rejected with 401.").StringVar(&c.events.HMACKeyFile)
	app.Flag("events.allow-unsigned", "Accept events without a signature when no --events.hmac-key-file is set.").BoolVar(&c.events.AllowUnsigned)
	c.eventsMaxBody = app.Flag("events.max-body-bytes", "Largest event body accepted; larger requests get 413.").Default("1MiB").Bytes()
	app.Flag("events.series-ttl", "How long event series are kept after their object is deleted from the cluster, or, for an object the exporter does not watch, after its last event.").Default("1h").DurationVar(&c.events.SeriesTTL)
	app.Flag("events.max-series", "Hard cap on event series; events past it are dropped and counted.").Default("10000").IntVar(&c.events.MaxSeries)
	c.shard = app.Flag("shard", "This replica's shard, from 0 to --total-shards minus one: it exports only the Flux objects whose UID hashes to it, as kube-state-metrics shards. The controllers collector runs on shard 0 only.").Default("0").IsSetByUser(&c.shardSet).Int()
	c.totalShards = app.Flag("total-shards", "Number of replicas the Flux objects are split between; 1 disables sharding.").Default("1").IsSetByUser(&c.totalSet).Int()
	app.Flag("kube.config", "Path to a kubeconfig; default: $KUBECONFIG, then in-cluster, then ~/.kube/config.").StringVar(&c.kube.Kubeconfig)
	app.Flag("kube.context", "Kubeconfig context to use; default: the current context.").StringVar(&c.kube.Context)
	app.Flag("kube.qps", "Queries per second allowed to the API server.").Default("20").Float32Var(&c.kube.QPS)
	app.Flag("kube.burst", "Burst of queries allowed to the API server.").Default("40").IntVar(&c.kube.Burst)
	c.metricAllowlist = app.Flag("metric-allowlist", "Comma-separated regular expressions over metric family names; only the families any of them matches are exported, as kube-state-metrics' flag. Mutually exclusive with --metric-denylist.").Default("").String()
	c.metricDenylist = app.Flag("metric-denylist", "Comma-separated regular expressions over metric family names; the families any of them matches are not exported, as kube-state-metrics' flag. Mutually exclusive with --metric-allowlist.").Default("").String()
	c.metricOptIn = app.Flag("metric-opt-in-list", "Comma-separated regular expressions over metric family names; turns on the opt-in per-object families any of them matches (docs/metrics.md marks them; '.' turns on all), as kube-state-metrics' flag. The allowlist or denylist still applies.").Default("").String()
	c.labelsAllowlist = app.Flag("metric-labels-allowlist", "Kubernetes label keys to export on flux_resource_labels, each as label_ and the sanitized key, per resource, in kube-state-metrics' syntax: resource=[key,...],... (e.g. kustomizations=[team,app.kubernetes.io/part-of]). A resource is a Flux kind's lower-case plural; * names every kind and then overrides the other entries; [*] takes every label. Kinds it does not name get no series.").Default("").String()
	c.annotsAllowlist = app.Flag("metric-annotations-allowlist", "Kubernetes annotation keys to export on flux_resource_annotations, each as annotation_ and the sanitized key, in the syntax of --metric-labels-allowlist.").Default("").String()
	c.dispatchFailures = app.Flag("notifications.dispatch-failures", "Count the notifications notification-controller fails to deliver, from the NotificationDispatchFailed Events it records on Alerts (flux_notification_dispatch_failures_total). Needs list and watch on events; --no-notifications.dispatch-failures turns it off.").Default("true").Bool()
	c.gotkResourceInfo = app.Flag("compat.gotk-resource-info", "Also export gotk_resource_info as the kube-state-metrics configuration of fluxcd/flux2-monitoring-example does, for Flux's official Grafana dashboards (docs/compat.md).").Default("false").Bool()
	c.collectors = collector.RegisterFlags(app)
	promslogflag.AddFlags(app, &c.log)
	app.Version(version.Print(program))
	app.HelpFlag.Short('h')
	return app, c
}

func run(args []string) int {
	app, c := newApp()
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v; see --help\n", program, nameFlag(app, args, err))
		return 2
	}
	s, err := settle(c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	logger := promslog.New(&c.log)
	klog.SetSlogLogger(logger.With("component", "client-go"))
	for _, w := range s.warnings {
		logger.Warn("Flag entry does not do what it seems to", "warning", w)
	}
	logger.Info("Starting "+program, "version", version.Info())
	logger.Info("Build context", "build_context", version.BuildContext())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f := start(ctx, stop, c, s, logger); f != nil {
		logger.Error(f.msg, "err", f.err)
		return f.code
	}
	logger.Info("Shut down cleanly")
	return 0
}

// settings are the flags that need more than parsing, checked and read.
type settings struct {
	apiGroups           []string
	filter              *collector.MetricFilter
	labels, annotations *collector.MetadataAllowlist
	// warnings are allowlist entries that parse but may not mean what they
	// seem to.
	warnings []string
	decoder  *collector.Decoder
}

// settle checks the flags against each other and reads the lists they
// hold; its error names the flag and what to give instead.
func settle(c *config) (settings, error) {
	var s settings
	if err := kube.ValidateNamespaces(splitList(*c.namespaces), splitList(*c.excludeNS)); err != nil {
		return s, err
	}
	var err error
	if s.apiGroups, err = kube.ParseAPIGroups(*c.apiGroups); err != nil {
		return s, err
	}
	if err := validateSharding(c); err != nil {
		return s, err
	}
	if s.filter, err = collector.NewMetricFilter(splitList(*c.metricAllowlist), splitList(*c.metricDenylist), splitList(*c.metricOptIn)); err != nil {
		return s, err
	}
	var lw, aw []string
	if s.labels, lw, err = collector.ParseMetadataAllowlist("--metric-labels-allowlist", *c.labelsAllowlist); err != nil {
		return s, err
	}
	if s.annotations, aw, err = collector.ParseMetadataAllowlist("--metric-annotations-allowlist", *c.annotsAllowlist); err != nil {
		return s, err
	}
	s.warnings = append(lw, aw...)
	s.warnings = append(s.warnings, s.filter.Warnings(collector.Families())...)
	// Records render only the families the filter keeps.
	s.decoder = collector.NewDecoder(collector.DecoderOptions{Filter: s.filter,
		Labels: s.labels, Annotations: s.annotations, GotkResourceInfo: *c.gotkResourceInfo,
		// What status.history held before this process started was
		// counted by the one before it, if any: counting it again would
		// read as phantom changes across a restart.
		CountSince: time.Now()})
	return s, nil
}

// failure is why the exporter stops: the log line, the error and the exit
// code (2 for a configuration the exporter cannot use, 1 otherwise).
type failure struct {
	code int
	msg  string
	err  error
}

func fail(code int, msg string, err error) *failure { return &failure{code, msg, err} }

// start connects to the API server, starts the caches and collectors and
// serves until ctx ends; stop ends it early.
func start(ctx context.Context, stop context.CancelFunc, c *config, s settings, logger *slog.Logger) *failure {
	cfg, f := connect(ctx, c, logger)
	if f != nil {
		return f
	}
	sharding, podSharding, f := resolveSharding(ctx, c, cfg, logger)
	if f != nil {
		return f
	}
	watcher, f := startWatcher(ctx, c, s, cfg, sharding, podSharding, logger)
	if f != nil {
		return f
	}
	exporter, ready, f := startCollectors(ctx, c, s, cfg, watcher, sharding, logger)
	if f != nil {
		return f
	}
	static := prometheus.NewRegistry()
	static.MustRegister(versioncollector.NewCollector(program))
	routes, f := startEvents(ctx, stop, c, watcher, static, logger)
	if f != nil {
		return f
	}
	if *c.dispatchFailures {
		if err := startDispatch(ctx, c, cfg, watcher, static, logger.With("component", "dispatch")); err != nil {
			return fail(1, "Cannot watch notification dispatch failures; grant list and watch on events, or pass --no-notifications.dispatch-failures", err)
		}
	}
	return serve(ctx, c, s, exporter, ready, static, routes, logger)
}

// connect builds the client configuration and waits for the API server,
// which must let the exporter read CustomResourceDefinitions.
func connect(ctx context.Context, c *config, logger *slog.Logger) (*rest.Config, *failure) {
	c.kube.UserAgent = program + "/" + version.Version
	cfg, source, err := kube.RESTConfig(c.kube)
	if err != nil {
		return nil, fail(1, "Cannot configure the Kubernetes client", err)
	}
	serverVersion, err := kube.WaitForServer(ctx, cfg, *c.startupTimeout, logger)
	if err != nil {
		return nil, fail(1, "Kubernetes API server unreachable", err)
	}
	logger.Info("Connected to Kubernetes", "host", cfg.Host, "config", source, "server_version", serverVersion)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fail(1, "Cannot create the Kubernetes client", err)
	}
	if err := checkCRDAccess(ctx, dyn); err != nil {
		return nil, fail(1, "Cannot read CustomResourceDefinitions", err)
	}
	return cfg, nil
}

// resolveSharding reads this replica's shard from the flags or, with
// --pod, from its StatefulSet, which it then follows.
func resolveSharding(ctx context.Context, c *config, cfg *rest.Config, logger *slog.Logger) (kube.Sharding, *kube.PodSharding, *failure) {
	sharding := kube.Sharding{Shard: *c.shard, Total: *c.totalShards}
	var podSharding *kube.PodSharding
	if *c.pod != "" {
		var err error
		if podSharding, err = kube.NewPodSharding(cfg, *c.pod, *c.podNamespace, logger.With("component", "sharding")); err == nil {
			rctx, cancel := context.WithTimeout(ctx, *c.startupTimeout)
			sharding, err = podSharding.Resolve(rctx)
			cancel()
		}
		if err != nil {
			return sharding, nil, fail(1, "Cannot find this pod's shard", err)
		}
	}
	if sharding.Enabled() {
		logger.Info("Sharding the Flux objects", "shard", sharding.Shard, "total_shards", sharding.Total, "from_pod", *c.pod != "")
	}
	return sharding, podSharding, nil
}

// startWatcher starts the Flux object caches, decoded by s.decoder, and
// reshards them when the StatefulSet scales.
func startWatcher(ctx context.Context, c *config, s settings, cfg *rest.Config, sharding kube.Sharding, podSharding *kube.PodSharding, logger *slog.Logger) (*kube.Watcher[*collector.Record], *failure) {
	watcher, err := kube.NewWatcher(cfg, kube.WatcherOptions[*collector.Record]{
		APIGroups:         s.apiGroups,
		Namespaces:        splitList(*c.namespaces),
		ExcludeNamespaces: splitList(*c.excludeNS),
		Sharding:          sharding,
		// Event series wait this long on a deletion; a sharded cache must
		// remember its deletions as long to tell them from other shards'
		// objects.
		DeletedRetention: c.events.SeriesTTL,
		Transform:        s.decoder.Decode,
		Logger:           logger,
	})
	if err != nil {
		return nil, fail(1, "Cannot watch Flux objects", err)
	}
	go watcher.Run(ctx)
	go warnUnknownResources(ctx, logger, watcher, map[string]*collector.MetadataAllowlist{
		"--metric-labels-allowlist": s.labels, "--metric-annotations-allowlist": s.annotations,
	})
	if podSharding != nil {
		err := podSharding.Watch(ctx, sharding, func(sh kube.Sharding) {
			if err := watcher.Reshard(ctx, sh); err != nil {
				logger.Error("Resharding left some Flux kinds unwatched", "err", err)
			}
		})
		if err != nil {
			return nil, fail(1, "Cannot watch this pod's StatefulSet", err)
		}
	}
	return watcher, nil
}

// startCollectors builds the enabled collectors, starting the controller
// pods' cache when the controllers collector runs, and returns what
// /-/ready checks.
func startCollectors(ctx context.Context, c *config, s settings, cfg *rest.Config, watcher *kube.Watcher[*collector.Record], sharding kube.Sharding, logger *slog.Logger) (*collector.Exporter, func() (bool, []string), *failure) {
	deps := collector.Deps{Flux: watcher, Decoder: s.decoder, ControllersTimeout: *c.controllersTimeout, Logger: logger}
	ready := watcher.Ready
	// Controller series come from the controller pods, not from the Flux
	// objects: every replica would export the same ones, and dashboards that
	// sum over instances would count them once per shard. A pod's ordinal
	// never changes, so neither does this choice.
	if c.collectors.Enabled("controllers") && sharding.Shard != 0 {
		logger.Info("The controllers collector runs on shard 0 only; this replica exports no controller series", "shard", sharding.Shard)
		c.collectors.Disable("controllers")
	}
	if c.collectors.Enabled("controllers") {
		controllers, err := kube.NewControllers(cfg, kube.ControllersOptions{Namespace: *c.fluxNamespace, Selector: *c.controllerSelector, Logger: logger})
		if err != nil {
			return nil, nil, fail(2, "Cannot watch the Flux controllers", err)
		}
		if err := controllers.Start(ctx); err != nil {
			return nil, nil, fail(1, "Cannot watch the Flux controllers", err)
		}
		deps.Controllers = controllers
		ready = allReady(watcher.Ready, controllers.Ready)
	}
	exporter, err := collector.New(deps, c.collectors)
	if err != nil {
		return nil, nil, fail(1, "Cannot start collectors", err)
	}
	return exporter, ready, nil
}

// startEvents starts the events receiver when --events.enabled: on the
// metrics listener (the route it returns) or on its own.
func startEvents(ctx context.Context, stop context.CancelFunc, c *config, watcher *kube.Watcher[*collector.Record], static *prometheus.Registry, logger *slog.Logger) (map[string]http.Handler, *failure) {
	routes := map[string]http.Handler{}
	if !*c.eventsEnabled {
		return routes, nil
	}
	c.events.MaxBodyBytes = int64(*c.eventsMaxBody)
	c.events.Exists = watcher.Exists
	c.events.Logger = logger.With("component", "events")
	receiver, err := events.New(c.events)
	if err != nil {
		return nil, fail(2, "Cannot enable the events endpoint", err)
	}
	static.MustRegister(receiver)
	go receiver.Run(ctx)
	if *c.eventsListen == "" {
		routes[events.Path] = receiver
		return routes, nil
	}
	emux := http.NewServeMux()
	emux.Handle(events.Path, receiver)
	esrv := web.NewServer(emux, receiver.MaxBodyBytes())
	eflags := &toolkit.FlagConfig{WebListenAddresses: &[]string{*c.eventsListen}, WebSystemdSocket: new(bool), WebConfigFile: c.eventsWebConfig}
	go func() {
		if err := web.Serve(ctx, esrv, eflags, logger.With("listener", "events")); err != nil {
			logger.Error("Events listener failed", "err", err)
			stop()
		}
	}()
	return routes, nil
}

// serve answers scrapes, /-/healthy, /-/ready and the routes until ctx
// ends.
func serve(ctx context.Context, c *config, s settings, exporter *collector.Exporter, ready func() (bool, []string), static *prometheus.Registry, routes map[string]http.Handler, logger *slog.Logger) *failure {
	var instrument prometheus.Registerer
	if !*c.disableExpMets {
		static.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		instrument = static
	}
	mux, err := web.NewMux(web.Options{
		TelemetryPath: *c.telemetryPath,
		Version:       version.Info(),
		Static:        static,
		Scrape:        exporter.Scrape,
		Filter:        s.filter,
		Instrument:    instrument,
		TimeoutOffset: *c.timeoutOffset,
		MaxRequests:   *c.maxRequests,
		Ready:         ready,
		Routes:        routes,
		Logger:        logger,
	})
	if err != nil {
		return fail(1, "Cannot build HTTP routes", err)
	}
	srv := web.NewServer(mux, web.MaxBodyBytes(routes))
	if err := web.Serve(ctx, srv, c.web, logger); err != nil {
		return fail(1, "HTTP server failed", err)
	}
	return nil
}

// startDispatch registers the dispatch failure counts when the API server
// serves core/v1 Events, and says so in the log when it does not.
func startDispatch(ctx context.Context, c *config, cfg *rest.Config, w *kube.Watcher[*collector.Record], reg prometheus.Registerer, logger *slog.Logger) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	served, err := dispatch.Served(client)
	if err != nil {
		return err
	}
	if !served {
		logger.Info("The API server serves no core/v1 Events; flux_notification_dispatch_failures_total is not exported")
		return nil
	}
	excluded := splitList(*c.excludeNS)
	d, err := dispatch.New(dispatch.Config{
		Client:     client,
		Namespaces: splitList(*c.namespaces),
		Watches:    func(ns string) bool { return !slices.Contains(excluded, ns) },
		Provider: func(ns, alert string) string {
			rec, _ := w.Get("Alert", ns, alert)
			return collector.AlertProvider(rec)
		},
		Exists: w.Exists,
		Keeps:  func(uid types.UID) bool { return w.Sharding().Keeps(uid) },
	})
	if err != nil {
		return err
	}
	reg.MustRegister(d)
	go func() {
		if err := d.Start(ctx); err != nil && ctx.Err() == nil {
			logger.Error("Dispatch failure Events never listed", "err", err)
		}
	}()
	return nil
}

// validateSharding checks the sharding flags together: --shard within
// --total-shards, and --pod with --pod-namespace and without the static
// pair, which it replaces.
func validateSharding(c *config) error {
	switch {
	case (*c.pod == "") != (*c.podNamespace == ""):
		return fmt.Errorf("--pod=%q and --pod-namespace=%q: give both, from the downward API (metadata.name and metadata.namespace), or neither", *c.pod, *c.podNamespace)
	case *c.pod != "" && (c.shardSet || c.totalSet):
		return fmt.Errorf("--pod takes the shard from the pod's StatefulSet; drop --shard and --total-shards, or drop --pod and --pod-namespace")
	case *c.pod != "":
		return nil
	}
	return kube.ValidateSharding(*c.shard, *c.totalShards)
}

// checkCRDAccess turns missing RBAC into a clear start-up error rather than
// a cache that never syncs.
func checkCRDAccess(ctx context.Context, dyn dynamic.Interface) error {
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w; grant get, list and watch on customresourcedefinitions (see deploy/ or the Helm chart's ClusterRole)", err)
	default:
		return fmt.Errorf("list customresourcedefinitions: %w", err)
	}
}

// nameFlag adds the flag to kingpin's value errors, which say only what
// was wrong ("invalid duration") and not where.
func nameFlag(app *kingpin.Application, args []string, err error) error {
	pc, perr := app.ParseContext(args)
	if perr != nil {
		return err
	}
	for _, el := range pc.Elements {
		f, ok := el.Clause.(*kingpin.FlagClause)
		if ok && el.Value != nil && *el.Value != "" && strings.Contains(err.Error(), *el.Value) {
			return fmt.Errorf("--%s: %w", f.Model().Name, err)
		}
	}
	return err
}

// allReady is ready when every check is, and lists everything pending.
func allReady(checks ...func() (bool, []string)) func() (bool, []string) {
	return func() (bool, []string) {
		var pending []string
		for _, check := range checks {
			if ok, p := check(); !ok {
				pending = append(pending, p...)
			}
		}
		return len(pending) == 0, pending
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// warnUnknownResources logs, once the caches have synced, each resource an
// allowlist names that no watched Flux kind has: a typo (kustomisations)
// would otherwise export nothing, silently. It gives up after 10 minutes
// without a sync; kinds installed later are not checked again.
func warnUnknownResources(ctx context.Context, logger *slog.Logger, w *kube.Watcher[*collector.Record], lists map[string]*collector.MetadataAllowlist) {
	if lists["--metric-labels-allowlist"] == nil && lists["--metric-annotations-allowlist"] == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range 600 {
		if ok, _ := w.Ready(); ok {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	var watched []string
	for _, ks := range w.State() {
		watched = append(watched, ks.Kind.Resource)
	}
	for _, flag := range slices.Sorted(maps.Keys(lists)) {
		for _, r := range lists[flag].Unknown(watched) {
			logger.Warn("An allowlist names a resource no watched Flux kind has; it selects nothing",
				"flag", flag, "resource", r, "fix", "name a Flux kind's lower-case plural as `kubectl api-resources` lists it, e.g. kustomizations")
		}
	}
}
