package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/recorded"
)

// Recorded timelines: testdata/recorded holds what source-controller,
// kustomize-controller and helm-controller wrote while cmd/flux-record
// played a scenario against them (make record-timelines). A timeline file
// with `recorded: true` replays its fixture instead of hand-written steps:
// every state in the order the controllers wrote it, moved onto the
// simulated clock by the timeline's scale, each minute's writes applied in
// turn and then scraped once, as Prometheus scrapes once a minute while
// the exporter sees every write.

// recordedSteps turns a fixture into timeline steps, one per simulated
// minute with writes; a write lands on the minute at or after it, so that
// no scrape shows a state before the controller wrote it.
func recordedSteps(f *recorded.Fixture, scale int) ([]timelineStep, error) {
	clock := recorded.Clock{Start: f.Start, Epoch: simEpoch, Scale: scale}
	var steps []timelineStep
	for i, s := range f.States {
		if _, deleting, _ := unstructured.NestedString(s.Object, "metadata", "deletionTimestamp"); deleting {
			return nil, fmt.Errorf("state %d: recorded deletions are not replayed; record scenarios without them", i)
		}
		b, err := json.Marshal(clock.Object(s.Object))
		if err != nil {
			return nil, fmt.Errorf("state %d: %w", i, err)
		}
		at := duration((clock.At(s.At) + time.Minute - 1).Truncate(time.Minute))
		if n := len(steps); n > 0 && steps[n-1].At == at {
			steps[n-1].Objects = append(steps[n-1].Objects, string(b))
			continue
		}
		steps = append(steps, timelineStep{At: at, Objects: []string{string(b)}, literal: true,
			Source: fmt.Sprintf("recorded in testdata/recorded/%s.yaml", f.Scenario)})
	}
	return steps, nil
}

// lastOfEach keeps, for each object a step wrote more than once, what it
// wrote last: the state the exporter must show once the step is in.
func lastOfEach(objs []stepObject) []stepObject {
	var out []stepObject
	for i, o := range objs {
		later := slices.ContainsFunc(objs[i+1:], func(p stepObject) bool { return p.kind == o.kind && p.name == o.name })
		if !later {
			out = append(out, o)
		}
	}
	return out
}

// recordedTable is the truth table's account of a recording: the
// recorder's actions and each change of an object's Ready condition, on
// the simulated clock, with the controller that wrote it.
func recordedTable(tl timeline) string {
	f := tl.fixture
	clock := recorded.Clock{Start: f.Start, Epoch: simEpoch, Scale: tl.Scale}
	var b strings.Builder
	fmt.Fprintf(&b, "Recorded from %s, replayed at %dx (sandbox/e2e/testdata/recorded/%s.yaml, with each controller's flags). "+
		"Actions are as the recorder performed them: their intervals and waits are at recording pace, 1/%d of the replay's.\n\n",
		controllersOf(f), tl.Scale, f.Scenario, tl.Scale)
	b.WriteString("| at | action or Ready written | by |\n|---|---|---|\n")
	type row struct {
		at   time.Duration
		text string
		by   string
	}
	var rows []row
	for _, a := range f.Actions {
		rows = append(rows, row{clock.At(a.At), a.Do, "flux-record"})
	}
	last := map[string]string{}
	for _, s := range f.States {
		u := unstructured.Unstructured{Object: s.Object}
		key := u.GetKind() + " " + u.GetName()
		ready := readyOf(&u)
		if ready == last[key] {
			continue
		}
		last[key] = ready
		rows = append(rows, row{clock.At(s.At), key + ": " + ready, s.By})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return int(a.at - b.at) })
	for _, r := range rows {
		fmt.Fprintf(&b, "| +%s | %s | %s |\n", simTime(r.at), strings.ReplaceAll(r.text, "|", "\\|"), r.by)
	}
	return b.String()
}

func controllersOf(f *recorded.Fixture) string {
	var out []string
	for name, v := range f.Controllers {
		out = append(out, name+" "+v)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func readyOf(u *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return fmt.Sprintf("Ready=%v %v", m["status"], m["reason"])
		}
	}
	return "no Ready"
}

// simTime writes a simulated time to the second: "12m30s".
func simTime(d time.Duration) string {
	d = d.Truncate(time.Second)
	switch {
	case d%time.Minute == 0:
		return duration(d).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return duration(d.Truncate(time.Minute)).String() + fmt.Sprintf("%ds", int(d%time.Minute/time.Second))
}

// markerNamespace holds one marker object per kind that recorded steps
// write after their own objects.
const markerNamespace = "tl-markers"

// marker is a marker object and the reason its Ready condition carries.
type marker struct{ kind, reason string }

// markStep follows a recorded step's writes with a write of a marker
// object of each kind written, whose Ready reason names the step. One
// informer per kind delivers its events in order, so once the exporter
// shows the marker it has handled every write of the step; the step's
// final conditions alone do not tell, as a controller often writes the
// same conditions twice in a row with other fields changed between.
func (c *cluster) markStep(t *testing.T, ns string, i int, s timelineStep) []marker {
	t.Helper()
	if !s.literal {
		return nil
	}
	last := map[string][]byte{}
	for _, doc := range s.Objects {
		var o struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		last[o.Kind] = []byte(doc)
	}
	var out []marker
	for kind, doc := range last {
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		reason := fmt.Sprintf("Step%d%s", i, strings.ReplaceAll(ns, "-", ""))
		u.SetName("marker-" + strings.ToLower(kind))
		u.SetNamespace(markerNamespace)
		u.SetFinalizers(nil)
		u.Object["status"] = map[string]any{"conditions": []any{map[string]any{
			"type": "Ready", "status": "False", "reason": reason, "message": "timeline step marker",
			"lastTransitionTime": simEpoch.Format(time.RFC3339),
		}}}
		c.upsert(t, u)
		out = append(out, marker{kind, reason})
	}
	return out
}

// showsMarkers tells whether the exporter has handled each marker.
func showsMarkers(sc scrape, markers []marker) error {
	for _, m := range markers {
		id := map[string]string{"exported_namespace": markerNamespace, "kind": m.kind, "name": "marker-" + strings.ToLower(m.kind), "reason": m.reason}
		if len(sc.find("flux_resource_condition", id)) == 0 {
			return fmt.Errorf("%s marker %s not exported yet", m.kind, m.reason)
		}
	}
	return nil
}
