package e2e

// Timelines: each scenario in testdata/timelines is a sequence of states of
// a few Flux objects as their controller writes them, step by step, with
// the controller's source cited for each step. The harness writes every
// step to a real API server, scrapes the real exporter after it, and turns
// the scrapes into a promtool test: the series hold each scraped value
// until the next step, on promtool's simulated clock, and the shipped rules
// are evaluated over them. Each scenario says which alerts fire at chosen
// times, with their labels; every other alert of the rule file must be
// silent then. docs/alert-timelines.md, the alert truth table, is written
// from the same files (go test -update).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/recorded"
)

// timeline is one scenario file.
type timeline struct {
	Name string `json:"name"`
	// Why says what the scenario shows and which report it comes from.
	Why   string         `json:"why"`
	Steps []timelineStep `json:"steps"`
	// Expect lists, at chosen times, the alerts that fire; all others
	// must be silent then.
	Expect []timelineCheck `json:"expect"`
	// Recorded takes the steps from testdata/recorded/<the same name>.yaml,
	// written by the real controllers, instead of Steps.
	Recorded bool `json:"recorded"`
	// Scale is how much slower than the recording the replay runs: the
	// recorder runs the controllers at 1/Scale of Flux's delays.
	Scale int `json:"scale"`
	// written is Steps as the file writes them, repetitions unexpanded.
	written []timelineStep
	fixture *recorded.Fixture
}

type timelineStep struct {
	// At is the step's time on the simulated clock, whole minutes.
	At duration `json:"at"`
	// Source cites the controller code that writes this state.
	Source string `json:"source"`
	// Objects are whole objects, status included, as the controller
	// leaves them; times in them are written {{at "5m"}}.
	Objects []string `json:"objects"`
	// Delete names objects (Kind/name) whose deletion is requested.
	Delete []string `json:"delete"`
	// Also repeats the step at these times, as a controller repeats an
	// attempt; {{.N}} is the repetition, 0 at At.
	Also []duration `json:"also"`
	n    int
	// literal objects are written as they are, with no template: those
	// of a recording.
	literal bool
}

type timelineCheck struct {
	At     duration      `json:"at"`
	Firing []firingAlert `json:"firing"`
	// Why says, for the truth table, why nothing else fires then.
	Why string `json:"why"`
}

type firingAlert struct {
	Alert  string            `json:"alert"`
	Labels map[string]string `json:"labels"`
	// Why is the line of the truth table.
	Why string `json:"why"`
}

// duration reads "90m" or "2h45m" from YAML.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration %s: %w", b, err)
	}
	md, err := model.ParseDuration(s)
	if err != nil {
		return err
	}
	v := time.Duration(md)
	if v%time.Minute != 0 {
		return fmt.Errorf("duration %s: the simulated clock runs in whole minutes", s)
	}
	*d = duration(v)
	return nil
}

func (d duration) minutes() int { return int(time.Duration(d) / time.Minute) }

// String writes whole days, hours and minutes: "7d", "2h45m", "6m".
func (d duration) String() string {
	m := d.minutes()
	var b strings.Builder
	for _, u := range []struct {
		n    int
		unit string
	}{{m / 1440, "d"}, {m % 1440 / 60, "h"}, {m % 60, "m"}} {
		if u.n > 0 {
			fmt.Fprintf(&b, "%d%s", u.n, u.unit)
		}
	}
	if b.Len() == 0 {
		return "0m"
	}
	return b.String()
}

// simEpoch is time 0 of promtool's clock, which is the Unix epoch: the
// scenario files' times are written relative to it.
var simEpoch = time.Unix(0, 0).UTC()

const (
	timelineJob      = "flux-exporter"
	timelineInstance = "exporter:9899"
)

func loadTimelines(t *testing.T) map[string]timeline {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "timelines", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no timelines in testdata/timelines: %v", err)
	}
	out := map[string]timeline{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tl timeline
		if err := yaml.UnmarshalStrict(b, &tl); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if tl.Recorded {
			if len(tl.Steps) > 0 || tl.Scale <= 0 {
				t.Fatalf("%s: a recorded timeline takes its steps from testdata/recorded and needs a scale", f)
			}
			if tl.fixture, err = recorded.Read(filepath.Join("testdata", "recorded", name+".yaml")); err != nil {
				t.Fatal(err)
			}
			if tl.Steps, err = recordedSteps(tl.fixture, tl.Scale); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if tl.Why == "" {
				tl.Why = tl.fixture.Why
			}
		}
		if len(tl.Steps) == 0 || len(tl.Expect) == 0 {
			t.Fatalf("%s: a timeline needs steps and expectations", f)
		}
		for i, s := range tl.Steps {
			if s.Source == "" {
				t.Fatalf("%s: step %d cites no controller source", f, i)
			}
		}
		tl.written = tl.Steps
		tl.Steps = expandSteps(tl.Steps)
		for i := 1; i < len(tl.Steps); i++ {
			if tl.Steps[i].At <= tl.Steps[i-1].At {
				t.Fatalf("%s: two steps at +%s", f, tl.Steps[i].At)
			}
		}
		out[name] = tl
	}
	return out
}

// expandSteps lists each repetition of a step as a step of its own, in
// time order.
func expandSteps(steps []timelineStep) []timelineStep {
	var out []timelineStep
	for _, s := range steps {
		out = append(out, s)
		for i, at := range s.Also {
			r := s
			r.At, r.Also, r.n = at, nil, i+1
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// TestAlertTimelines runs every scenario against one API server and one
// exporter, each scenario in a namespace of its own.
func TestAlertTimelines(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install Debian's prometheus package (apt-get update && apt-get install -y prometheus)", err)
	}
	tls := loadTimelines(t)
	rules := rulesWithoutAnnotations(t)
	c := newCluster(t, apiserver.ModeCRD)
	// The default families, and flux_resource_generation, which is opt-in,
	// only to tell when the exporter has seen a spec write (showsStep);
	// seriesOf leaves it out of what the rules are tested on.
	e := startExporter(t, c.kubeconfig, "--no-collector.controllers", "--metric-opt-in-list=^"+syncFamily+"$")
	e.waitReady()
	names := make([]string, 0, len(tls))
	for n := range tls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			ns := "tl-" + n
			scrapes := runTimeline(t, c, e, ns, tls[n])
			test := promtoolTest(t, rules, ns, tls[n], scrapes)
			runPromtool(t, promtool, test)
		})
	}
	checkTruthTable(t, names, tls)
}

// scraped is one scrape after a step: the scenario's series with their
// values on the simulated clock.
type scraped struct {
	at     duration
	series map[string]float64
}

// runTimeline writes each step and scrapes once the exporter shows it.
func runTimeline(t *testing.T, c *cluster, e *exporter, ns string, tl timeline) []scraped {
	t.Helper()
	var out []scraped
	firstSeen := map[string]float64{} // server-set times, on the simulated clock
	for i, s := range tl.Steps {
		applied := c.writeStep(t, ns, i, s)
		markers := c.markStep(t, ns, i, s)
		var sc scrape
		eventually(t, 30*time.Second, func() error {
			sc = e.scrape()
			if err := showsMarkers(sc, markers); err != nil {
				return err
			}
			return showsStep(sc, ns, applied)
		})
		out = append(out, scraped{at: s.At, series: seriesOf(sc, ns, s.At, firstSeen)})
	}
	return out
}

// stepObject is what the exporter must show once a step is in the cache.
type stepObject struct {
	kind, name string
	gone       bool
	deleting   bool
	conditions []string // type/status/reason, sorted
	// generation tells a spec write (a suspension) that leaves the
	// conditions as they were from the scrape before it.
	generation int64
}

// writeStep creates or updates each object of step i, status through the
// status subresource as the controllers write it, and requests deletions.
func (c *cluster) writeStep(t *testing.T, ns string, i int, s timelineStep) []stepObject {
	t.Helper()
	var out []stepObject
	for j, doc := range s.Objects {
		b, err := []byte(doc), error(nil)
		if !s.literal {
			b, err = renderDoc(doc, s)
		}
		if err != nil {
			t.Fatalf("step %d (+%s) object %d: %v", i, s.At, j, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.UnmarshalStrict(b, &u.Object); err != nil {
			t.Fatalf("step %d (+%s) object %d: %v\n%s", i, s.At, j, err, b)
		}
		u.SetNamespace(ns)
		out = append(out, c.upsert(t, u))
	}
	out = lastOfEach(out)
	for _, ref := range s.Delete {
		kind, name, ok := strings.Cut(ref, "/")
		gvr, known := gvrs[kind]
		if !ok || !known {
			t.Fatalf("step %d: delete %q: want Kind/name of a known kind", i, ref)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.dyn.Resource(gvr).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
		cancel()
		if err != nil {
			t.Fatalf("step %d: delete %s: %v", i, ref, err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		u, err := c.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		cancel()
		switch {
		case apierrors.IsNotFound(err):
			out = append(out, stepObject{kind: kind, name: name, gone: true})
		case err != nil:
			t.Fatalf("step %d: get %s: %v", i, ref, err)
		default:
			out = append(out, expectedOf(u))
		}
	}
	return out
}

// renderDoc fills in a step's object: times on the simulated clock, and
// the shapes every step repeats (timelineFuncs).
func renderDoc(doc string, s timelineStep) ([]byte, error) {
	tmpl, err := template.New("object").Option("missingkey=error").Funcs(timelineFuncs(s)).Parse(doc)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, struct{ N int }{s.n})
	return b.Bytes(), err
}

// timelineFuncs are the scenario files' template functions:
//
//	at "5m"                 the time 5 minutes into the scenario
//	now                     the step's own time
//	cond TYPE STATUS REASON AT MESSAGE
//	                        a status condition set at AT ("now" or a duration)
//	snap VERSION ACTION STATUS CHART_VERSION DEPLOYED
//	                        a HelmRelease status.history entry of chart podinfo
//	add A B                 A+B, for counters that grow with {{.N}}
//	gitRepository NAME      a GitRepository that is Ready with an artifact
//	helmRepository NAME     a HelmRepository that is Ready with an artifact
func timelineFuncs(s timelineStep) template.FuncMap {
	at := func(d string) (string, error) {
		if d == "now" {
			return simEpoch.Add(time.Duration(s.At)).Format(time.RFC3339), nil
		}
		v, err := time.ParseDuration(d)
		return simEpoch.Add(v).Format(time.RFC3339), err
	}
	return template.FuncMap{
		"at":  at,
		"now": func() (string, error) { return at("now") },
		"add": func(a, b int) int { return a + b },
		"cond": func(typ, status, reason, when, msg string) (string, error) {
			ts, err := at(when)
			return fmt.Sprintf(`{type: %s, status: "%s", reason: %s, message: %s, lastTransitionTime: "%s"}`,
				typ, status, reason, strconv.Quote(msg), ts), err
		},
		"snap": func(version int, action, status, chart, deployed string) (string, error) {
			ts, err := at(deployed)
			return fmt.Sprintf(`{name: podinfo, namespace: apps, version: %d, action: %s, status: %s, chartName: podinfo, chartVersion: "%s", appVersion: "%s", configDigest: "sha256:c0", digest: "sha256:d%d", firstDeployed: "%s", lastDeployed: "%s"}`,
				version, action, status, chart, chart, version, simEpoch.Format(time.RFC3339), ts), err
		},
		"gitRepository": func(name string) string {
			return fmt.Sprintf(`{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, metadata: {name: %s},
  spec: {interval: 1m, url: "https://git.example.com/fleet.git", ref: {branch: main}},
  status: {observedGeneration: 1, conditions: [{type: Ready, status: "True", reason: Succeeded, message: "stored artifact for revision 'main@sha1:aaaa'", lastTransitionTime: "%s", observedGeneration: 1}],
    artifact: {path: "gitrepository/x/%s/aaaa.tar.gz", url: "http://source-controller/aaaa.tar.gz", revision: "main@sha1:aaaa", digest: "sha256:aaaa", lastUpdateTime: "%s", size: 1024}}}`,
				name, simEpoch.Format(time.RFC3339), name, simEpoch.Format(time.RFC3339))
		},
		"helmRepository": func(name string) string {
			return fmt.Sprintf(`{apiVersion: source.toolkit.fluxcd.io/v1, kind: HelmRepository, metadata: {name: %s},
  spec: {interval: 10m, url: "https://charts.example.com"},
  status: {observedGeneration: 1, conditions: [{type: Ready, status: "True", reason: Succeeded, message: "stored artifact: revision 'sha256:bbbb'", lastTransitionTime: "%s", observedGeneration: 1}],
    artifact: {path: "helmrepository/x/%s/index.yaml", url: "http://source-controller/index.yaml", revision: "sha256:bbbb", digest: "sha256:bbbb", lastUpdateTime: "%s", size: 2048}}}`,
				name, simEpoch.Format(time.RFC3339), name, simEpoch.Format(time.RFC3339))
		},
	}
}

// upsert writes u: created if new, else its metadata and spec replaced;
// then its status. A terminating object whose finalizers the step empties
// goes away, as when its controller finishes.
func (c *cluster) upsert(t *testing.T, u *unstructured.Unstructured) stepObject {
	t.Helper()
	gvr, ok := gvrs[u.GetKind()]
	if !ok {
		t.Fatalf("no GVR for kind %q", u.GetKind())
	}
	res := c.dyn.Resource(gvr).Namespace(u.GetNamespace())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, hasStatus := u.Object["status"]
	delete(u.Object, "status")
	cur, err := res.Get(ctx, u.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = res.Create(ctx, u, metaCreate)
	case err == nil:
		u.SetResourceVersion(cur.GetResourceVersion())
		u.SetUID(cur.GetUID())
		cur, err = res.Update(ctx, u, metaUpdate)
	}
	if apierrors.IsNotFound(err) || (err == nil && cur.GetDeletionTimestamp() != nil && len(cur.GetFinalizers()) == 0) {
		return stepObject{kind: u.GetKind(), name: u.GetName(), gone: true}
	}
	if err != nil {
		t.Fatalf("write %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	if hasStatus {
		setObservedGeneration(status, cur.GetGeneration())
		cur.Object["status"] = status
		if cur, err = res.UpdateStatus(ctx, cur, metaUpdate); apierrors.IsNotFound(err) {
			return stepObject{kind: u.GetKind(), name: u.GetName(), gone: true}
		} else if err != nil {
			t.Fatalf("write status of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	return expectedOf(cur)
}

// setObservedGeneration gives each condition that names none the object's
// generation: fluxcd/pkg runtime/conditions Set stamps every condition a
// controller sets with it, and the scenario files leave it out because
// the API server, not the file, numbers generations.
func setObservedGeneration(status any, gen int64) {
	m, _ := status.(map[string]any)
	conds, _ := m["conditions"].([]any)
	for _, c := range conds {
		if cm, ok := c.(map[string]any); ok {
			if _, set := cm["observedGeneration"]; !set {
				cm["observedGeneration"] = gen
			}
		}
	}
}

func expectedOf(u *unstructured.Unstructured) stepObject {
	o := stepObject{kind: u.GetKind(), name: u.GetName(), deleting: u.GetDeletionTimestamp() != nil, generation: u.GetGeneration()}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		o.conditions = append(o.conditions, fmt.Sprintf("%v/%v/%v", m["type"], m["status"], m["reason"]))
	}
	sort.Strings(o.conditions)
	return o
}

// showsStep tells whether the scrape reflects every object of the step.
func showsStep(sc scrape, ns string, objs []stepObject) error {
	for _, o := range objs {
		id := map[string]string{"exported_namespace": ns, "kind": o.kind, "name": o.name}
		present := len(sc.find("flux_resource_info", id)) > 0
		if o.gone {
			if present {
				return fmt.Errorf("%s %s still exported after it went away", o.kind, o.name)
			}
			continue
		}
		if !present {
			return fmt.Errorf("%s %s not exported yet", o.kind, o.name)
		}
		var got []string
		for _, m := range sc.find("flux_resource_condition", id) {
			l := labels(m)
			got = append(got, l["type"]+"/"+l["status"]+"/"+l["reason"])
		}
		sort.Strings(got)
		if !slices.Equal(got, o.conditions) {
			return fmt.Errorf("%s %s: exported conditions %v, written %v", o.kind, o.name, got, o.conditions)
		}
		if gen, _ := sc.value(syncFamily, id); int64(gen) != o.generation {
			return fmt.Errorf("%s %s: exported generation %v, written %d", o.kind, o.name, gen, o.generation)
		}
		if deleting := len(sc.find("flux_resource_deletion_timestamp_seconds", id)) > 0; deleting != o.deleting {
			return fmt.Errorf("%s %s: deletion exported %v, written %v", o.kind, o.name, deleting, o.deleting)
		}
	}
	return nil
}

// syncFamily is the opt-in family TestAlertTimelines turns on to see
// spec writes, such as a suspension, that change no condition.
const syncFamily = "flux_resource_generation"

// serverTimes are the families whose value the API server sets at the
// real time of a request, not the scenario: each value is moved onto the
// simulated clock at the step whose scrape first showed it.
var serverTimes = map[string]bool{
	"flux_resource_deletion_timestamp_seconds": true,
	"flux_resource_created_timestamp_seconds":  true,
}

// seriesOf keeps the scrape's gauges and counters of the scenario's
// namespace, each as a PromQL series selector with the target's labels.
func seriesOf(sc scrape, ns string, at duration, firstSeen map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for name, fam := range sc.fams {
		if name == syncFamily {
			continue // opt-in: the rules are tested on the default set
		}
		for _, m := range fam.GetMetric() {
			l := labels(m)
			if l["exported_namespace"] != ns {
				continue
			}
			if m.Histogram != nil || m.Summary != nil {
				continue // no shipped alert reads a per-object histogram
			}
			v := sampleValue(m)
			l["job"], l["instance"] = timelineJob, timelineInstance
			sel := selector(name, l)
			if serverTimes[name] {
				key := sel + "=" + strconv.FormatFloat(v, 'f', -1, 64)
				if _, ok := firstSeen[key]; !ok {
					firstSeen[key] = time.Duration(at).Seconds()
				}
				v = firstSeen[key]
			}
			out[sel] = v
		}
	}
	return out
}

func selector(name string, l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k, v := range l {
		if v != "" { // Prometheus drops empty labels at the scrape
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + strconv.Quote(l[k]))
	}
	b.WriteByte('}')
	return b.String()
}
