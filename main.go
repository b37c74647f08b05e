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

	"github.com/flux-exporter/flux_exporter/collector"
	"github.com/flux-exporter/flux_exporter/dispatch"
	"github.com/flux-exporter/flux_exporter/events"
	"github.com/flux-exporter/flux_exporter/kube"
	"github.com/flux-exporter/flux_exporter/web"
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
		controllersTimeout: app.Flag("controllers.timeout", "Longest time a scrape waits for the controller pods' /metrics; the scrape's own deadline applies when shorter.").Default(collector.DefaultControllersTimeout.String()).Duration(),

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
	if err := kube.ValidateNamespaces(splitList(*c.namespaces), splitList(*c.excludeNS)); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	apiGroups, err := kube.ParseAPIGroups(*c.apiGroups)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	if err := validateSharding(c); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	metricFilter, err := collector.NewMetricFilter(splitList(*c.metricAllowlist), splitList(*c.metricDenylist))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	labelsAllow, labelsWarnings, err := collector.ParseMetadataAllowlist("--metric-labels-allowlist", *c.labelsAllowlist)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	annotsAllow, annotsWarnings, err := collector.ParseMetadataAllowlist("--metric-annotations-allowlist", *c.annotsAllowlist)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		return 2
	}
	// Records render only the families the filter keeps.
	decoder := collector.NewDecoder(collector.DecoderOptions{Filter: metricFilter,
		Labels: labelsAllow, Annotations: annotsAllow, GotkResourceInfo: *c.gotkResourceInfo})
	logger := promslog.New(&c.log)
	klog.SetSlogLogger(logger.With("component", "client-go"))
	for _, w := range append(labelsWarnings, annotsWarnings...) {
		logger.Warn("Allowlist entry does not do what it seems to", "warning", w)
	}

	logger.Info("Starting "+program, "version", version.Info())
	logger.Info("Build context", "build_context", version.BuildContext())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c.kube.UserAgent = program + "/" + version.Version
	cfg, source, err := kube.RESTConfig(c.kube)
	if err != nil {
		logger.Error("Cannot configure the Kubernetes client", "err", err)
		return 1
	}
	serverVersion, err := kube.WaitForServer(ctx, cfg, *c.startupTimeout, logger)
	if err != nil {
		logger.Error("Kubernetes API server unreachable", "err", err)
		return 1
	}
	logger.Info("Connected to Kubernetes", "host", cfg.Host, "config", source, "server_version", serverVersion)

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		logger.Error("Cannot create the Kubernetes client", "err", err)
		return 1
	}
	if err := checkCRDAccess(ctx, dyn); err != nil {
		logger.Error("Cannot read CustomResourceDefinitions", "err", err)
		return 1
	}
	sharding := kube.Sharding{Shard: *c.shard, Total: *c.totalShards}
	var podSharding *kube.PodSharding
	if *c.pod != "" {
		if podSharding, err = kube.NewPodSharding(cfg, *c.pod, *c.podNamespace, logger.With("component", "sharding")); err == nil {
			rctx, cancel := context.WithTimeout(ctx, *c.startupTimeout)
			sharding, err = podSharding.Resolve(rctx)
			cancel()
		}
		if err != nil {
			logger.Error("Cannot find this pod's shard", "err", err)
			return 1
		}
	}
	if sharding.Enabled() {
		logger.Info("Sharding the Flux objects", "shard", sharding.Shard, "total_shards", sharding.Total, "from_pod", *c.pod != "")
	}
	watcher, err := kube.NewWatcher(cfg, kube.WatcherOptions{
		APIGroups:         apiGroups,
		Namespaces:        splitList(*c.namespaces),
		ExcludeNamespaces: splitList(*c.excludeNS),
		Sharding:          sharding,
		// Event series wait this long on a deletion; a sharded cache must
		// remember its deletions as long to tell them from other shards'
		// objects.
		DeletedRetention: c.events.SeriesTTL,
		Transform:        decoder.Decode,
		Logger:           logger,
	})
	if err != nil {
		logger.Error("Cannot watch Flux objects", "err", err)
		return 1
	}
	go watcher.Run(ctx)
	go warnUnknownResources(ctx, logger, watcher, map[string]*collector.MetadataAllowlist{
		"--metric-labels-allowlist": labelsAllow, "--metric-annotations-allowlist": annotsAllow,
	})
	if podSharding != nil {
		err := podSharding.Watch(ctx, sharding, func(s kube.Sharding) {
			if err := watcher.Reshard(ctx, s); err != nil {
				logger.Error("Resharding left some Flux kinds unwatched", "err", err)
			}
		})
		if err != nil {
			logger.Error("Cannot watch this pod's StatefulSet", "err", err)
			return 1
		}
	}

	deps := collector.Deps{Flux: watcher, Decoder: decoder, ControllersTimeout: *c.controllersTimeout, Logger: logger}
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
			logger.Error("Cannot watch the Flux controllers", "err", err)
			return 2
		}
		if err := controllers.Start(ctx); err != nil {
			logger.Error("Cannot watch the Flux controllers", "err", err)
			return 1
		}
		deps.Controllers = controllers
		ready = allReady(watcher.Ready, controllers.Ready)
	}

	exporter, err := collector.New(deps, c.collectors)
	if err != nil {
		logger.Error("Cannot start collectors", "err", err)
		return 1
	}

	static := prometheus.NewRegistry()
	static.MustRegister(versioncollector.NewCollector(program))
	routes := map[string]http.Handler{}
	if *c.eventsEnabled {
		c.events.MaxBodyBytes = int64(*c.eventsMaxBody)
		c.events.Exists = watcher.Exists
		c.events.Logger = logger.With("component", "events")
		receiver, err := events.New(c.events)
		if err != nil {
			logger.Error("Cannot enable the events endpoint", "err", err)
			return 2
		}
		if c.events.HMACKeyFile == "" {
			logger.Warn("Events endpoint accepts unsigned events: anyone who can reach it can write event metrics; set --events.hmac-key-file")
		}
		static.MustRegister(receiver)
		go receiver.Run(ctx)
		if *c.eventsListen == "" {
			routes[events.Path] = receiver
		} else {
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
		}
	}
	if *c.dispatchFailures {
		if err := startDispatch(ctx, c, cfg, watcher, static, logger.With("component", "dispatch")); err != nil {
			logger.Error("Cannot watch notification dispatch failures; grant list and watch on events, or pass --no-notifications.dispatch-failures", "err", err)
			return 1
		}
	}
	var instrument prometheus.Registerer
	if !*c.disableExpMets {
		static.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		instrument = static
	}

	mux, err := web.NewMux(web.Options{
		TelemetryPath: *c.telemetryPath,
		Version:       version.Info(),
		Static:        static,
		Scrape:        exporter.ScrapeWriting,
		Filter:        metricFilter,
		Instrument:    instrument,
		TimeoutOffset: *c.timeoutOffset,
		MaxRequests:   *c.maxRequests,
		Ready:         ready,
		Routes:        routes,
		Logger:        logger,
	})
	if err != nil {
		logger.Error("Cannot build HTTP routes", "err", err)
		return 1
	}
	srv := web.NewServer(mux, web.MaxBodyBytes(routes))
	if err := web.Serve(ctx, srv, c.web, logger); err != nil {
		logger.Error("HTTP server failed", "err", err)
		return 1
	}
	logger.Info("Shut down cleanly")
	return 0
}

// startDispatch registers the dispatch failure counts when the API server
// serves core/v1 Events, and says so in the log when it does not.
func startDispatch(ctx context.Context, c *config, cfg *rest.Config, w *kube.Watcher, reg prometheus.Registerer, logger *slog.Logger) error {
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
func warnUnknownResources(ctx context.Context, logger *slog.Logger, w *kube.Watcher, lists map[string]*collector.MetadataAllowlist) {
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
