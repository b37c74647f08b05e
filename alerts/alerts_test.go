package alerts

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/flux-exporter/flux_exporter/internal/collector"
	"go.yaml.in/yaml/v3"
)

const runbookBase = "https://github.com/flux-exporter/flux_exporter/blob/main/docs/runbooks/"

// runbookDir is where runbook_url resolves inside the repository.
var runbookDir = filepath.Join("..", "docs", "runbooks")

// requiredAlerts are the alerts issues 6 and 12 ask for; the rule file may hold more.
var requiredAlerts = []string{
	"FluxResourceNotReady",
	"FluxResourceStalled",
	"FluxSourceFetchFailing",
	"FluxGenerationNotObserved",
	"FluxHelmReleaseFailing",
	"FluxHelmReleaseRolledBack",
	"FluxHelmReleaseDrifted",
	"FluxResourceSuspendedTooLong",
	// Issue 12: a reference to an object that does not exist.
	"FluxResourceDependencyMissing",
	"FluxControllerDown",
	"FluxControllerWorkqueueBacklog",
	"FluxControllerReconcileErrors",
	"FluxExporterCollectorFailing",
	"FluxExporterKindNotSynced",
	"FluxEventsRejected",
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

// unitTestFile is the part of a `promtool test rules` file these tests read.
type unitTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		AlertRuleTest []alertRuleTest `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

type alertRuleTest struct {
	EvalTime  string `yaml:"eval_time"`
	AlertName string `yaml:"alertname"`
	ExpAlerts []struct {
		ExpLabels map[string]string `yaml:"exp_labels"`
	} `yaml:"exp_alerts"`
}

func ruleFileNames(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(Rules, "*.rules.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no *.rules.yaml in the embedded rule files (err %v)", err)
	}
	return names
}

func loadAlerts(t *testing.T) []rule {
	t.Helper()
	var alerts []rule
	for _, r := range loadRules(t) {
		if r.Alert != "" {
			alerts = append(alerts, r)
		}
	}
	if len(alerts) == 0 {
		t.Fatal("the rule files hold no alert")
	}
	return alerts
}

// loadRules reads every rule, alerting and recording, of the rule files.
func loadRules(t *testing.T) []rule {
	t.Helper()
	var rules []rule
	for _, name := range ruleFileNames(t) {
		data, err := Rules.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		var rf ruleFile
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&rf); err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, g := range rf.Groups {
			rules = append(rules, g.Rules...)
		}
	}
	return rules
}

// TestRulesReadDefaultFamilies keeps the rules working on what a default
// exporter sends: no expression or annotation query may read a family the
// catalogue marks opt-in.
func TestRulesReadDefaultFamilies(t *testing.T) {
	optIn := map[string]bool{}
	for _, f := range collector.Families() {
		if f.OptIn {
			optIn[f.Name] = true
		}
	}
	if len(optIn) == 0 {
		t.Fatal("the catalogue marks no family opt-in; this test would check nothing")
	}
	name := regexp.MustCompile(`flux_[a-z0-9_]+`)
	for _, r := range loadRules(t) {
		texts := []string{r.Expr}
		for _, a := range r.Annotations {
			texts = append(texts, a)
		}
		for _, text := range texts {
			for _, n := range name.FindAllString(text, -1) {
				if optIn[n] {
					t.Errorf("rule %s%s reads %s, which is opt-in: a default exporter does not send it", r.Alert, r.Record, n)
				}
			}
		}
	}
}

func loadUnitTests(t *testing.T) map[string]unitTestFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("tests", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no promtool unit tests in tests/ (err %v)", err)
	}
	files := make(map[string]unitTestFile, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		var f unitTestFile
		if err := yaml.Unmarshal(data, &f); err != nil {
			t.Fatalf("parse %s: %v", p, err)
		}
		files[p] = f
	}
	return files
}

var alertName = regexp.MustCompile(`^Flux[A-Z][A-Za-z0-9]*$`)

func TestAlertsFollowMixinConventions(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range loadAlerts(t) {
		t.Run(a.Alert, func(t *testing.T) {
			if seen[a.Alert] {
				t.Errorf("alert %s is defined twice", a.Alert)
			}
			seen[a.Alert] = true
			if !alertName.MatchString(a.Alert) {
				t.Errorf("name %q is not CamelCase with the Flux prefix", a.Alert)
			}
			if s := a.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("severity %q, want critical, warning or info", s)
			}
			for key := range a.Annotations {
				if !slices.Contains([]string{"summary", "description", "runbook_url"}, key) {
					t.Errorf("unexpected annotation %q", key)
				}
			}
			summary := a.Annotations["summary"]
			if summary == "" || strings.Contains(summary, "{{") {
				t.Errorf("summary %q must be non-empty and static", summary)
			}
			if !strings.Contains(a.Annotations["description"], "{{") {
				t.Errorf("description %q must be templated", a.Annotations["description"])
			}
			if want := runbookBase + a.Alert + ".md"; a.Annotations["runbook_url"] != want {
				t.Errorf("runbook_url %q, want %q", a.Annotations["runbook_url"], want)
			}
		})
	}
}

func TestRequiredAlertsExist(t *testing.T) {
	var names []string
	for _, a := range loadAlerts(t) {
		names = append(names, a.Alert)
	}
	for _, want := range requiredAlerts {
		if !slices.Contains(names, want) {
			t.Errorf("required alert %s is missing", want)
		}
	}
}

// TestRunbookURLsResolve checks runbook_url against the repository tree: the
// URL's path below runbookBase must be an existing file with the three
// sections every runbook needs.
func TestRunbookURLsResolve(t *testing.T) {
	for _, a := range loadAlerts(t) {
		rel, ok := strings.CutPrefix(a.Annotations["runbook_url"], runbookBase)
		if !ok {
			t.Errorf("%s: runbook_url %q is not under %s", a.Alert, a.Annotations["runbook_url"], runbookBase)
			continue
		}
		data, err := os.ReadFile(filepath.Join(runbookDir, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("%s: runbook_url does not resolve to a file: %v", a.Alert, err)
			continue
		}
		text := string(data)
		for _, heading := range []string{"# " + a.Alert + "\n", "\n## Meaning\n", "\n## How to check\n", "\n## What to do\n"} {
			if !strings.Contains(text, heading) {
				t.Errorf("%s: runbook %s lacks the line %q", a.Alert, rel, strings.TrimSpace(heading))
			}
		}
	}
}

func TestEveryRunbookBelongsToAnAlert(t *testing.T) {
	alerts := map[string]bool{}
	for _, a := range loadAlerts(t) {
		alerts[a.Alert] = true
	}
	paths, err := filepath.Glob(filepath.Join(runbookDir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	index, err := os.ReadFile(filepath.Join(runbookDir, "README.md"))
	if err != nil {
		t.Fatalf("runbook index: %v", err)
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".md")
		if name == "README" {
			continue
		}
		if !alerts[name] {
			t.Errorf("runbook %s has no alert of that name", p)
		}
		if !strings.Contains(string(index), "("+name+".md)") {
			t.Errorf("runbook index README.md does not link %s.md", name)
		}
	}
}

// TestEveryAlertHasFiringAndSilentCases reads the promtool unit tests: each
// alert needs an evaluation that expects it to fire and one that expects
// silence.
func TestEveryAlertHasFiringAndSilentCases(t *testing.T) {
	fires, silent := map[string]bool{}, map[string]bool{}
	for path, f := range loadUnitTests(t) {
		if len(f.RuleFiles) == 0 {
			t.Errorf("%s loads no rule file", path)
		}
		for _, tc := range f.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.AlertName] = true
				} else {
					silent[at.AlertName] = true
				}
			}
		}
	}
	for _, a := range loadAlerts(t) {
		if !fires[a.Alert] {
			t.Errorf("%s: no promtool test case where it fires", a.Alert)
		}
		if !silent[a.Alert] {
			t.Errorf("%s: no promtool test case where it stays silent", a.Alert)
		}
	}
}

var objectName = regexp.MustCompile(`\bname="([^"]+)"`)

// TestNotReadyTestsCoverExclusions guards the two exclusions issue 6 names:
// the FluxResourceNotReady tests must feed a suspended object and a
// DependencyNotReady object, and expect neither to fire.
func TestNotReadyTestsCoverExclusions(t *testing.T) {
	var suspended, waiting, fired []string
	for _, f := range loadUnitTests(t) {
		for _, tc := range f.Tests {
			if !slices.ContainsFunc(tc.AlertRuleTest, func(at alertRuleTest) bool {
				return at.AlertName == "FluxResourceNotReady"
			}) {
				continue
			}
			for _, s := range tc.InputSeries {
				m := objectName.FindStringSubmatch(s.Series)
				if m == nil {
					continue
				}
				switch {
				case strings.HasPrefix(s.Series, "flux_resource_info{") && strings.Contains(s.Series, `suspended="True"`) && strings.HasPrefix(s.Values, "1"):
					suspended = append(suspended, m[1])
				case strings.HasPrefix(s.Series, "flux_resource_condition{") && strings.Contains(s.Series, `reason="DependencyNotReady"`):
					waiting = append(waiting, m[1])
				}
			}
			for _, at := range tc.AlertRuleTest {
				if at.AlertName != "FluxResourceNotReady" {
					continue
				}
				for _, e := range at.ExpAlerts {
					fired = append(fired, e.ExpLabels["name"])
				}
			}
		}
	}
	if len(suspended) == 0 || len(waiting) == 0 {
		t.Fatalf("FluxResourceNotReady tests need a suspended and a DependencyNotReady object; got suspended %v, DependencyNotReady %v", suspended, waiting)
	}
	if len(fired) == 0 {
		t.Fatal("FluxResourceNotReady tests never expect it to fire")
	}
	for _, name := range append(suspended, waiting...) {
		if slices.Contains(fired, name) {
			t.Errorf("FluxResourceNotReady is expected to fire for %q, which is suspended or waiting for a dependency", name)
		}
	}
}

// promtool finds the promtool binary; a missing one fails the test, since
// the rule checks are part of `make test`.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (%v): install Debian's prometheus package with `apt-get update && apt-get install -y prometheus`", err)
	}
	return path
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, append([]string{"check", "rules"}, ruleFileNames(t)...)...)
}

func TestPromtoolTestRules(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("tests", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no promtool unit tests in tests/ (err %v)", err)
	}
	runPromtool(t, append([]string{"test", "rules"}, paths...)...)
}
