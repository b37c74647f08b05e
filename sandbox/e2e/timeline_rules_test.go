package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// shippedRules is the rule file users load.
var shippedRules = filepath.Join("..", "..", "alerts", "flux-exporter.rules.yaml")

// ruleSet is the shipped rule file with its annotations taken out, and the
// severity of each alert. promtool compares annotations exactly; the
// timelines assert when alerts fire and with which labels, and
// alerts/tests holds their texts.
type ruleSet struct {
	file     string
	severity map[string]string
	alerts   []string
}

func rulesWithoutAnnotations(t *testing.T) ruleSet {
	t.Helper()
	b, err := os.ReadFile(shippedRules)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []map[string]any `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", shippedRules, err)
	}
	rs := ruleSet{severity: map[string]string{}}
	for _, g := range doc.Groups {
		rules, _ := g["rules"].([]any)
		for _, r := range rules {
			m, _ := r.(map[string]any)
			name, ok := m["alert"].(string)
			if !ok {
				continue
			}
			delete(m, "annotations")
			labels, _ := m["labels"].(map[string]any)
			rs.severity[name], _ = labels["severity"].(string)
			rs.alerts = append(rs.alerts, name)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	rs.file = filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rs.file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	sort.Strings(rs.alerts)
	return rs
}

// promtoolTest renders the recorded scrapes and the expectations as one
// promtool test file: each series holds its value from a step to the next,
// one sample a minute, and goes stale when a step's scrape lacks it.
func promtoolTest(t *testing.T, rs ruleSet, ns string, tl timeline, scrapes []scraped) string {
	t.Helper()
	end := tl.Steps[len(tl.Steps)-1].At.minutes()
	for _, x := range tl.Expect {
		end = max(end, x.At.minutes())
	}
	names := map[string]bool{}
	for _, r := range scrapes {
		for s := range r.series {
			names[s] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for s := range names {
		sorted = append(sorted, s)
	}
	sort.Strings(sorted)
	var b strings.Builder
	fmt.Fprintf(&b, "rule_files: [%s]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n", strconv.Quote(rs.file))
	for _, s := range sorted {
		fmt.Fprintf(&b, "  - series: %s\n    values: %s\n", strconv.Quote(s), strconv.Quote(valuesOf(s, scrapes, end)))
	}
	b.WriteString("  alert_rule_test:\n")
	for _, x := range tl.Expect {
		for _, name := range rs.alerts {
			fmt.Fprintf(&b, "  - eval_time: %dm\n    alertname: %s\n    exp_alerts:", x.At.minutes(), name)
			n := 0
			for _, f := range x.Firing {
				if _, ok := rs.severity[f.Alert]; !ok {
					t.Fatalf("%s: expected alert %s is not in %s", tl.Name, f.Alert, shippedRules)
				}
				if f.Alert != name {
					continue
				}
				n++
				l := map[string]string{"job": timelineJob, "instance": timelineInstance, "exported_namespace": ns, "severity": rs.severity[name]}
				for k, v := range f.Labels {
					l[k] = v
				}
				for k, v := range l {
					if v == "" {
						delete(l, k) // as Prometheus keeps no empty label
					}
				}
				b.WriteString("\n    - exp_labels:\n")
				keys := make([]string, 0, len(l))
				for k := range l {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(&b, "        %s: %s\n", k, strconv.Quote(l[k]))
				}
			}
			if n == 0 {
				b.WriteString(" []\n")
			}
		}
	}
	return b.String()
}

// valuesOf writes series s in promtool's expanding notation from minute 0
// to end: "_" before it appears, its value while the latest step had it,
// "stale" once when a step lost it.
func valuesOf(s string, scrapes []scraped, end int) string {
	var parts []string
	run := func(tok string, n int) {
		switch {
		case n <= 0:
		case tok == "_":
			parts = append(parts, fmt.Sprintf("_x%d", n))
		case n == 1:
			parts = append(parts, tok)
		default:
			parts = append(parts, fmt.Sprintf("%s+0x%d", tok, n-1))
		}
	}
	seen := false
	for i, r := range scrapes {
		from := r.at.minutes()
		to := end + 1
		if i+1 < len(scrapes) {
			to = scrapes[i+1].at.minutes()
		}
		if i == 0 && from > 0 {
			run("_", from)
		}
		v, ok := r.series[s]
		switch {
		case ok:
			seen = true
			run(strconv.FormatFloat(v, 'g', -1, 64), to-from)
		case seen:
			seen = false
			parts = append(parts, "stale")
			run("_", to-from-1)
		default:
			run("_", to-from)
		}
	}
	return strings.Join(parts, " ")
}

// runPromtool runs the test file and fails with promtool's own account.
func runPromtool(t *testing.T, promtool, test string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "timeline_test.yaml")
	if err := os.WriteFile(f, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", f).CombinedOutput()
	if err != nil {
		keep := filepath.Join(os.TempDir(), "flux-exporter-"+strings.ReplaceAll(t.Name(), "/", "_")+".yaml")
		_ = os.WriteFile(keep, []byte(test), 0o644)
		t.Fatalf("promtool test rules (input kept in %s): %v\n%s", keep, err, out)
	}
}

// truthTable is docs/alert-timelines.md.
var truthTable = filepath.Join("..", "..", "docs", "alert-timelines.md")

// checkTruthTable holds docs/alert-timelines.md to the scenario files.
func checkTruthTable(t *testing.T, names []string, tls map[string]timeline) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`# Alert truth table

Generated from sandbox/e2e/testdata/timelines by TestAlertTimelines
(` + "`go test ./e2e -run TestAlertTimelines -update`" + ` in sandbox/); do not edit.

Each scenario is a sequence of states as a Flux controller writes them,
with the controller's code cited per step in its file. The test writes
each step to a real API server, scrapes flux_exporter, and evaluates the
shipped rules over the scrapes with promtool on a simulated clock. At each
time below exactly the alerts listed fire, with the labels shown; every
other alert of alerts/flux-exporter.rules.yaml is silent. Durations follow
docs/flux-semantics.md, rules 12 to 14.
`)
	for _, n := range names {
		tl := tls[n]
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", tl.Name, strings.TrimSpace(tl.Why))
		if tl.fixture != nil {
			b.WriteString(recordedTable(tl))
		} else {
			b.WriteString("| step | state written | controller source |\n|---|---|---|\n")
			for i, s := range tl.written {
				fmt.Fprintf(&b, "| %d | %s | %s |\n", i+1, stepSummary(s), strings.ReplaceAll(strings.TrimSpace(s.Source), "\n", " "))
			}
		}
		b.WriteString("\n| at | fires | why |\n|---|---|---|\n")
		for _, x := range tl.Expect {
			if len(x.Firing) == 0 {
				fmt.Fprintf(&b, "| +%s | nothing | %s |\n", x.At, strings.TrimSpace(x.Why))
			}
			for _, f := range x.Firing {
				fmt.Fprintf(&b, "| +%s | %s %s/%s | %s |\n", x.At, f.Alert, f.Labels["kind"], f.Labels["name"], strings.TrimSpace(f.Why))
			}
			if len(x.Firing) > 0 && x.Why != "" {
				fmt.Fprintf(&b, "| +%s | nothing else | %s |\n", x.At, strings.TrimSpace(x.Why))
			}
		}
	}
	got := b.String()
	if *update {
		if err := os.WriteFile(truthTable, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(truthTable)
	if err != nil || string(want) != got {
		t.Errorf("%s is not what the timelines say (err %v); run go test ./e2e -run TestAlertTimelines -update in sandbox/", truthTable, err)
	}
}

// stepSummary is the step's time and each object's kind, name, Ready and
// reason, as the table shows them.
func stepSummary(s timelineStep) string {
	var parts []string
	for _, doc := range s.Objects {
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct{ Type, Status, Reason string } `json:"conditions"`
			} `json:"status"`
		}
		if b, err := renderDoc(doc, s); err == nil {
			_ = yaml.Unmarshal(b, &o)
		}
		var conds []string
		for _, c := range o.Status.Conditions {
			conds = append(conds, c.Type+"="+c.Status+" "+c.Reason)
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", o.Kind, o.Metadata.Name, strings.Join(conds, ", ")))
	}
	for _, d := range s.Delete {
		parts = append(parts, "delete "+d)
	}
	at := "+" + s.At.String()
	for _, a := range s.Also {
		at += ", +" + a.String()
	}
	return fmt.Sprintf("%s %s", at, strings.Join(parts, "; "))
}
