// Package fleet generates a deterministic, realistic fleet of Flux objects,
// applies it to an API server the way the Flux controllers would (create,
// then write the status through the status subresource), and churns it like a
// live cluster.
//
// Every kind in the Flux CRDs is covered, objects reference sources that
// exist, and each status has the shape and the condition reasons the real
// controllers write: source artifacts, Kustomization inventories and history,
// HelmRelease release history and failure counters, image scan results and
// Receiver webhook paths. A share of the fleet is suspended, failing,
// progressing, stalled or never reconciled.
package fleet

import (
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// DefaultNow is the reference time of a fleet whose Options.Now is zero, so
// that a seed alone fixes every byte of the generated objects.
var DefaultNow = time.Date(2025, time.June, 2, 9, 0, 0, 0, time.UTC)

// Options say which fleet to generate. The same Options always give the same
// fleet.
type Options struct {
	Seed       int64
	Objects    int // exact number of Flux objects
	Namespaces int
	// Now is the reference time: every timestamp in a status lies before it.
	// Zero means DefaultNow.
	Now time.Time
}

// MinObjectsForAllKinds is the smallest fleet that contains every kind.
const MinObjectsForAllKinds = 25

// State is what the fleet asked a controller to have written for an object.
type State string

const (
	// StateReady: the last reconciliation succeeded (Ready=True).
	StateReady State = "Ready"
	// StateFailing: the last reconciliation failed (Ready=False).
	StateFailing State = "Failing"
	// StateProgressing: a new generation is being reconciled
	// (Reconciling=True, Ready=Unknown, observedGeneration behind).
	StateProgressing State = "Progressing"
	// StateStalled: the controller gave up until the spec changes
	// (Stalled=True, Ready=False).
	StateStalled State = "Stalled"
	// StateUnreconciled: no controller has written a status yet.
	StateUnreconciled State = "Unreconciled"
	// StateNoStatus: the kind's controller never writes a status (Alert,
	// Provider, HelmRepository of type oci).
	StateNoStatus State = "NoStatus"
)

// Object is one planned Flux object.
type Object struct {
	Group string
	Kind  string
	State State
	// Suspended objects have spec.suspend: true.
	Suspended bool
	// Generation is metadata.generation once applied: Apply makes as many
	// spec updates as it takes.
	Generation int64
	// Object holds apiVersion, kind, metadata, spec and, when the State
	// has one, the status the controller writes.
	Object *unstructured.Unstructured

	consumes  objRef // the source whose artifact it uses
	dependsOn objRef // a Kustomization or HelmRelease it waits for
	// dangling is an object its spec names that the fleet leaves out on
	// purpose (dependencyStates).
	dangling objRef
}

// objRef names an object; the zero value names none.
type objRef struct{ kind, ns, name string }

func (r objRef) String() string { return r.kind + " " + r.ns + "/" + r.name }

func refOf(o *Object) objRef { return objRef{o.Kind, o.Namespace(), o.Name()} }

// Namespace of the object.
func (o *Object) Namespace() string { return o.Object.GetNamespace() }

// Name of the object.
func (o *Object) Name() string { return o.Object.GetName() }

// Status returns the planned status, or nil when the object has none.
func (o *Object) Status() map[string]any {
	s, _ := o.Object.Object["status"].(map[string]any)
	return s
}

// Fleet is a generated set of Flux objects.
type Fleet struct {
	Options    Options
	Namespaces []string
	Objects    []*Object

	reg *registry // what later generation (churn) may reference
}

// Generate builds the fleet the options describe.
func Generate(opts Options) (*Fleet, error) {
	if opts.Objects < 1 {
		return nil, fmt.Errorf("objects must be at least 1, got %d", opts.Objects)
	}
	if opts.Namespaces < 1 {
		return nil, fmt.Errorf("namespaces must be at least 1, got %d", opts.Namespaces)
	}
	if opts.Now.IsZero() {
		opts.Now = DefaultNow
	}
	opts.Now = opts.Now.UTC().Truncate(time.Second)

	namespaces := make([]string, opts.Namespaces)
	for i := range namespaces {
		if i < len(namespaceNames) {
			namespaces[i] = namespaceNames[i]
		} else {
			namespaces[i] = fmt.Sprintf("tenant-%02d", i-len(namespaceNames)+1)
		}
	}
	g := newGen(opts.Seed, opts.Now, opts.Objects)
	g.fill(namespaces)
	return &Fleet{Options: opts, Namespaces: namespaces, Objects: g.out, reg: g.reg}, nil
}

// Counts are what a client listing objects can observe about them.
type Counts struct {
	Total        int
	ReadyTrue    int // Ready condition True
	ReadyFalse   int // Ready condition False
	ReadyUnknown int // Ready condition Unknown
	NoReady      int // no Ready condition: never reconciled, or a kind without status
	Stalled      int // Stalled condition True
	Suspended    int // spec.suspend true
}

func (c *Counts) add(o Counts) {
	c.Total += o.Total
	c.ReadyTrue += o.ReadyTrue
	c.ReadyFalse += o.ReadyFalse
	c.ReadyUnknown += o.ReadyUnknown
	c.NoReady += o.NoReady
	c.Stalled += o.Stalled
	c.Suspended += o.Suspended
}

// Classify counts one object as a client sees it.
func Classify(u *unstructured.Unstructured) Counts {
	c := Counts{Total: 1}
	if s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); s {
		c.Suspended = 1
	}
	switch conditionStatus(u.Object, "Ready") {
	case "True":
		c.ReadyTrue = 1
	case "False":
		c.ReadyFalse = 1
	case "Unknown":
		c.ReadyUnknown = 1
	default:
		c.NoReady = 1
	}
	if conditionStatus(u.Object, "Stalled") == "True" {
		c.Stalled = 1
	}
	return c
}

// Summary counts a fleet per kind.
type Summary struct {
	Total  Counts
	Kinds  map[string]Counts
	States map[State]int
}

// Summarize counts objects per kind as a client would see them once applied.
func Summarize(objs []*unstructured.Unstructured) Summary {
	s := Summary{Kinds: map[string]Counts{}, States: map[State]int{}}
	for _, u := range objs {
		c := Classify(u)
		k := s.Kinds[u.GetKind()]
		k.add(c)
		s.Kinds[u.GetKind()] = k
		s.Total.add(c)
	}
	return s
}

// Summary counts the planned fleet per kind and per planned State.
func (f *Fleet) Summary() Summary {
	objs := make([]*unstructured.Unstructured, len(f.Objects))
	for i, o := range f.Objects {
		objs[i] = o.Object
	}
	s := Summarize(objs)
	for _, o := range f.Objects {
		s.States[o.State]++
	}
	return s
}

// String renders the summary as a small table, one kind per line.
func (s Summary) String() string {
	kinds := make([]string, 0, len(s.Kinds))
	for k := range s.Kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	out := fmt.Sprintf("%-22s %6s %6s %6s %8s %8s %8s %9s\n", "KIND", "TOTAL", "READY", "FALSE", "UNKNOWN", "NOREADY", "STALLED", "SUSPENDED")
	row := func(name string, c Counts) string {
		return fmt.Sprintf("%-22s %6d %6d %6d %8d %8d %8d %9d\n", name, c.Total, c.ReadyTrue, c.ReadyFalse, c.ReadyUnknown, c.NoReady, c.Stalled, c.Suspended)
	}
	for _, k := range kinds {
		out += row(k, s.Kinds[k])
	}
	return out + row("total", s.Total)
}

// conditionStatus returns the status of the condition of that type, or "".
func conditionStatus(obj map[string]any, typ string) string {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}
