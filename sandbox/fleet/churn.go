package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// ChurnOptions set how Churn changes an applied fleet.
type ChurnOptions struct {
	// Interval between ticks; must be positive.
	Interval time.Duration
	// Seed picks the changes; the same seed on the same applied fleet makes
	// the same sequence of changes.
	Seed int64
	// ChangesPerTick defaults to one per 100 objects, at least 1.
	ChangesPerTick int
	// Ticks stops Churn after that many ticks; 0 runs until ctx is done.
	Ticks int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ChurnStats count what Churn did.
type ChurnStats struct {
	Ticks            int
	RevisionBumps    int // a source stored a new artifact revision
	DependentUpdates int // a consumer applied or released the new revision
	ReadinessFlips   int
	GenerationBumps  int // a spec edit; the status catches up on a later tick
	CatchUps         int
	Suspends         int
	Resumes          int
	Deletes          int
	Creates          int
	FailedChanges    int // a consumer's new revision failed, as its controller records it
	Rollbacks        int // helm-controller rolled a failed upgrade back
	Recoveries       int // a failed change passed on a later attempt
	Errors           int
}

// errNotEligible marks a churn target that does not qualify for a change.
var errNotEligible = errors.New("not eligible")

// churn actions, each changing one object (and its dependents).
type churnAction int

const (
	actBump churnAction = iota
	actFlip
	actGeneration
	actSuspend
	actReplace
)

func (a churnAction) String() string {
	return [...]string{"bump-revision", "flip-readiness", "bump-generation", "suspend-resume", "delete-create"}[a]
}

// churnPattern is the cycle of actions, weighted toward what happens most
// in a live cluster: new revisions, then readiness changes.
var churnPattern = []churnAction{actBump, actFlip, actBump, actGeneration, actFlip, actSuspend, actBump, actReplace}

// node is what churn knows about a live object without asking the server.
type node struct {
	ref       objRef
	group     string
	hasStatus bool
	consumes  objRef
	dependsOn objRef
}

type churner struct {
	c          *client
	r          *rand.Rand
	g          *gen
	log        *slog.Logger
	namespaces []string
	nodes      []*node
	pending    []catchUp
	suspended  []objRef // suspended by churn, resumed first-in first-out
	// followUps are controllers acting on a change a few ticks after it:
	// a consumer applying a source's new revision, a rollback, a retry.
	followUps []followUp
	tick      int
	stats     ChurnStats
}

// followUp is one controller step due at a later tick.
type followUp struct {
	node *node
	due  int
	kind followUpKind
	rev  string
	art  map[string]any
}

type followUpKind int

const (
	// applyRevision: the consumer reconciles the source's new revision
	// within its interval, not in the same instant.
	applyRevision followUpKind = iota
	// rollBack: helm-controller remediates a failed upgrade by rollback.
	rollBack
	// recover: the next attempt at the failed change succeeds.
	recover
)

// failEvery is how often a consumer's new revision fails, one in that
// many: enough for the Delivery dashboard's change failure rate to move.
const failEvery = 5

// catchUp is a controller finishing a reconciliation a few ticks later.
type catchUp struct {
	ref   objRef
	group string
	due   int
	ready map[string]any // the Ready condition to restore; nil keeps conditions
}

// Churn changes the applied fleet every interval as a live cluster would:
// sources store new revisions that their consumers then apply, objects turn
// ready and failing, specs change and the status catches up a tick or two
// later, objects are suspended and resumed, and leaf objects are deleted
// while new ones are created. It returns when ctx is done (with a nil error)
// or after opts.Ticks ticks.
func Churn(ctx context.Context, cfg *rest.Config, f *Fleet, opts ChurnOptions) (ChurnStats, error) {
	if opts.Interval <= 0 {
		return ChurnStats{}, fmt.Errorf("churn interval must be positive, got %s", opts.Interval)
	}
	c, err := newClient(cfg)
	if err != nil {
		return ChurnStats{}, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ChangesPerTick <= 0 {
		opts.ChangesPerTick = max(1, len(f.Objects)/100)
	}
	g := newGen(opts.Seed^0x5eed, f.Options.Now, math.MaxInt)
	if f.reg != nil {
		g.reg = f.reg.clone()
	}
	ch := &churner{
		c:          c,
		r:          rand.New(rand.NewPCG(uint64(opts.Seed), 0xc0ffee)),
		g:          g,
		log:        opts.Logger,
		namespaces: f.Namespaces,
	}
	for _, o := range f.Objects {
		ch.track(o)
	}

	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	for opts.Ticks == 0 || ch.stats.Ticks < opts.Ticks {
		select {
		case <-ctx.Done():
			return ch.stats, nil
		case <-ticker.C:
		}
		if err := ch.runTick(ctx, opts.ChangesPerTick); err != nil {
			if ctx.Err() != nil {
				return ch.stats, nil
			}
			return ch.stats, err
		}
	}
	return ch.stats, nil
}

func (ch *churner) track(o *Object) {
	ch.nodes = append(ch.nodes, &node{
		ref: refOf(o), group: o.Group, hasStatus: o.State != StateNoStatus,
		consumes: o.consumes, dependsOn: o.dependsOn,
	})
}

func (ch *churner) untrack(r objRef) {
	for i, n := range ch.nodes {
		if n.ref == r {
			ch.nodes = append(ch.nodes[:i], ch.nodes[i+1:]...)
			return
		}
	}
}

func (ch *churner) runTick(ctx context.Context, changes int) error {
	ch.stats.Ticks++
	ch.tick++
	now := time.Now().UTC().Truncate(time.Second)

	keep := ch.pending[:0]
	for _, cu := range ch.pending {
		if cu.due > ch.tick {
			keep = append(keep, cu)
			continue
		}
		if err := ch.catchUp(ctx, cu, now); err != nil {
			ch.fail(ctx, "catch-up", cu.ref, err)
		}
	}
	ch.pending = keep

	due := ch.followUps[:0:0]
	later := ch.followUps[:0]
	for _, f := range ch.followUps {
		if f.due > ch.tick {
			later = append(later, f)
			continue
		}
		due = append(due, f)
	}
	ch.followUps = later
	for _, f := range due {
		if err := ch.followUp(ctx, f, now); err != nil && !errors.Is(err, errNotEligible) {
			ch.fail(ctx, "follow-up", f.node.ref, err)
		}
	}

	for i := range changes {
		act := churnPattern[((ch.tick-1)*changes+i)%len(churnPattern)]
		if err := ch.do(ctx, act, now); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ch.stats.Errors++
			ch.log.Warn("churn action failed", "action", act.String(), "err", err)
		}
	}
	ch.log.Debug("churn tick", "tick", ch.tick, "objects", len(ch.nodes))
	return nil
}

func (ch *churner) fail(ctx context.Context, what string, r objRef, err error) {
	if ctx.Err() != nil {
		return
	}
	ch.stats.Errors++
	ch.log.Warn("churn step failed", "step", what, "kind", r.kind, "namespace", r.ns, "name", r.name, "err", err)
}

// do tries a few random candidates for the action; those the server state
// rules out (errNotEligible) are skipped.
func (ch *churner) do(ctx context.Context, act churnAction, now time.Time) error {
	if act == actSuspend && len(ch.suspended) > 0 {
		return ch.resume(ctx, now)
	}
	filter := map[churnAction]func(*node) bool{
		actBump: func(n *node) bool { return bumpable[n.ref.kind] },
		actFlip: func(n *node) bool { return n.hasStatus },
		actGeneration: func(n *node) bool {
			return n.hasStatus && n.ref.kind != KindExternalArtifact && n.ref.kind != KindImagePolicy
		},
		// The operator's kinds have no spec.suspend: it reads an annotation.
		actSuspend: func(n *node) bool {
			return n.ref.kind != KindExternalArtifact && n.ref.kind != KindHelmChart && groupOf(n.ref.kind) != groupOperator
		},
		actReplace: ch.deletable,
	}[act]
	var cands []*node
	for _, n := range ch.nodes {
		if filter(n) && !ch.isPending(n.ref) {
			cands = append(cands, n)
		}
	}
	const tries = 8
	for range min(tries, len(cands)) {
		n := cands[ch.r.IntN(len(cands))]
		var err error
		switch act {
		case actBump:
			err = ch.bump(ctx, n, now)
		case actFlip:
			err = ch.flip(ctx, n, now)
		case actGeneration:
			err = ch.bumpGeneration(ctx, n, now)
		case actSuspend:
			err = ch.suspend(ctx, n)
		case actReplace:
			err = ch.replace(ctx, n, now)
		}
		if !errors.Is(err, errNotEligible) {
			return err
		}
	}
	ch.log.Debug("churn found no eligible object", "action", act.String())
	return nil
}

func (ch *churner) isPending(r objRef) bool {
	for _, cu := range ch.pending {
		if cu.ref == r {
			return true
		}
	}
	for _, s := range ch.suspended {
		if s == r {
			return true
		}
	}
	return false
}

// get fetches a live object and the client for its kind.
func (ch *churner) get(ctx context.Context, group string, r objRef) (*unstructured.Unstructured, dynamic.ResourceInterface, error) {
	ri, _, err := ch.c.resource(group, r.kind, r.ns)
	if err != nil {
		return nil, nil, err
	}
	u, err := ri.Get(ctx, r.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ch.untrack(r)
		return nil, nil, errNotEligible
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", r, err)
	}
	return u, ri, nil
}
