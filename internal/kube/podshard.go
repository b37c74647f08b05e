package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// PodIndexLabel is set by the StatefulSet controller (Kubernetes 1.28 and
// later) on each pod to its ordinal.
const PodIndexLabel = "apps.kubernetes.io/pod-index"

// PodSharding derives the shard from the StatefulSet that runs the exporter,
// as kube-state-metrics' --pod and --pod-namespace do: the shard is the
// pod's ordinal and the number of shards the StatefulSet's replicas. It
// needs get on its own Pod and get, list, watch on StatefulSets in its
// namespace, nothing cluster-wide.
type PodSharding struct {
	client    kubernetes.Interface
	pod       string
	namespace string
	log       *slog.Logger

	statefulSet string
	ordinal     int
}

// NewPodSharding prepares to read the shard of pod in namespace.
func NewPodSharding(cfg *rest.Config, pod, namespace string, logger *slog.Logger) (*PodSharding, error) {
	if pod == "" || namespace == "" {
		return nil, errors.New("kube: PodSharding needs both the pod and its namespace")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	return &PodSharding{client: client, pod: pod, namespace: namespace, log: logger}, nil
}

// Resolve reads the pod and its StatefulSet and returns the sharding they
// give. It also remembers the StatefulSet for Watch.
func (p *PodSharding) Resolve(ctx context.Context) (Sharding, error) {
	pod, err := p.client.CoreV1().Pods(p.namespace).Get(ctx, p.pod, metav1.GetOptions{})
	if err != nil {
		return Sharding{}, p.explain(err, "get", "pods", fmt.Sprintf("pod %s/%s from --pod and --pod-namespace", p.namespace, p.pod))
	}
	var owner *metav1.OwnerReference
	for i, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && ref.Kind == "StatefulSet" && strings.HasPrefix(ref.APIVersion, "apps/") {
			owner = &pod.OwnerReferences[i]
		}
	}
	if owner == nil {
		return Sharding{}, fmt.Errorf("pod %s/%s is not run by a StatefulSet, so it has no ordinal to shard by; run the exporter as a StatefulSet, or give --shard and --total-shards instead of --pod", p.namespace, p.pod)
	}
	ordinal, err := podOrdinal(pod.Name, owner.Name, pod.Labels[PodIndexLabel])
	if err != nil {
		return Sharding{}, err
	}
	sts, err := p.client.AppsV1().StatefulSets(p.namespace).Get(ctx, owner.Name, metav1.GetOptions{})
	if err != nil {
		return Sharding{}, p.explain(err, "get", "statefulsets", fmt.Sprintf("StatefulSet %s/%s, the owner of pod %s", p.namespace, owner.Name, p.pod))
	}
	p.statefulSet, p.ordinal = sts.Name, ordinal
	return p.shardingOf(sts), nil
}

// podOrdinal prefers the StatefulSet controller's pod-index label and falls
// back on the name, <statefulset>-<ordinal>, for clusters older than 1.28.
func podOrdinal(pod, statefulSet, label string) (int, error) {
	from, what := label, "label "+PodIndexLabel
	if label == "" {
		from, what = strings.TrimPrefix(pod, statefulSet+"-"), "name"
		if from == pod {
			return 0, fmt.Errorf("pod %s has no %s label and its name does not start with %s-, the name of its StatefulSet; cannot tell its ordinal", pod, PodIndexLabel, statefulSet)
		}
	}
	n, err := strconv.Atoi(from)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("pod %s: the ordinal %q from its %s is not a non-negative number", pod, from, what)
	}
	return n, nil
}

func (p *PodSharding) shardingOf(sts *appsv1.StatefulSet) Sharding {
	total := 1 // the API server's default for an unset replicas
	if sts.Spec.Replicas != nil {
		total = int(*sts.Spec.Replicas)
	}
	return Sharding{Shard: p.ordinal, Total: total}
}

// explain adds what to grant to a Forbidden error.
func (p *PodSharding) explain(err error, verb, resource, what string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("read %s: %w; grant %s on %s in namespace %s to the exporter's ServiceAccount (the chart's autosharding Role does)", what, err, verb, resource, p.namespace)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// Watch calls onChange with the new sharding each time the StatefulSet's
// replicas change, until ctx ends. Resolve must have succeeded. onChange
// runs in one goroutine, one call at a time, so a slow reshard delays the
// next rather than racing it.
func (p *PodSharding) Watch(ctx context.Context, current Sharding, onChange func(Sharding)) error {
	if p.statefulSet == "" {
		return errors.New("kube: PodSharding.Watch before a successful Resolve")
	}
	factory := informers.NewSharedInformerFactoryWithOptions(p.client, 0,
		informers.WithNamespace(p.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.statefulSet).String()
		}))
	inf := factory.Apps().V1().StatefulSets().Informer()
	if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		p.log.Warn("Watch of the exporter's StatefulSet failed; keeping the current shard while retrying",
			"statefulset", p.statefulSet, "namespace", p.namespace, "err", err)
	}); err != nil {
		return fmt.Errorf("set StatefulSet watch error handler: %w", err)
	}
	changes := make(chan Sharding, 1)
	update := func(obj any) {
		sts, ok := obj.(*appsv1.StatefulSet)
		if !ok {
			return
		}
		s := p.shardingOf(sts)
		// Keep only the latest: a reshard that is still running will be
		// followed by one to the newest replicas, not by each in between.
		select {
		case <-changes:
		default:
		}
		changes <- s
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
	}); err != nil {
		return fmt.Errorf("add StatefulSet handler: %w", err)
	}
	factory.Start(ctx.Done())
	go func() {
		defer factory.Shutdown()
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-changes:
				if s == current {
					continue
				}
				if s.Shard >= s.Total {
					p.log.Warn("This pod's ordinal is past the StatefulSet's replicas, as while it is scaled down; it keeps no Flux objects until it is removed",
						"pod", p.pod, "shard", s.Shard, "total_shards", s.Total)
				}
				p.log.Info("The StatefulSet's replicas changed; resharding", "statefulset", p.statefulSet,
					"shard", s.Shard, "total_shards", s.Total, "previous_total_shards", current.Total)
				onChange(s)
				current = s
			}
		}
	}()
	return nil
}
