package dashboards

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// wantDashboards maps each file to its stable uid.
var wantDashboards = map[string]string{
	"flux-fleet-overview.json":  "flux-fleet-overview",
	"flux-resource-detail.json": "flux-resource-detail",
	"flux-controllers.json":     "flux-controllers",
	"flux-delivery.json":        "flux-delivery",
}

// knownMetrics are the families the dashboards may use: those of the
// code-checked reference docs/metrics.md (TestMetricsReference keeps it equal
// to the exporter's descriptors), a summary's _sum and _count, a histogram's
// _bucket, _sum and _count, and `up`. A typo in a query fails
// TestQueriesUseKnownMetricsAndScope. optIn are the families the reference
// marks opt-in: the dashboards must work on the default set, so only a
// panel's optional targets may read them (TestOptionalTargets).
func knownMetrics(t *testing.T) (known []string, optIn map[string]bool) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	known = []string{"up"}
	optIn = map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(flux_[a-z0-9_]+)` \\| (\\w+) \\| ([a-z-]+) \\|").FindAllStringSubmatch(string(doc), -1) {
		if m[3] == "opt-in" {
			optIn[m[1]] = true
		}
		known = append(known, m[1])
		switch m[2] {
		case "summary":
			known = append(known, m[1]+"_sum", m[1]+"_count")
		case "histogram":
			known = append(known, m[1]+"_bucket", m[1]+"_sum", m[1]+"_count")
		}
	}
	if len(known) < 40 || len(optIn) == 0 {
		t.Fatalf("read only %d metrics, %d of them opt-in, from docs/metrics.md", len(known), len(optIn))
	}
	return known, optIn
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	Datasource datasourceRef `json:"datasource"`
	Expr       string        `json:"expr"`
	RefID      string        `json:"refId"`
}

type panel struct {
	ID          int           `json:"id"`
	Type        string        `json:"type"`
	Title       string        `json:"title"`
	Description string        `json:"description"`
	Datasource  datasourceRef `json:"datasource"`
	Targets     []target      `json:"targets"`
	Panels      []panel       `json:"panels"`
}

type variable struct {
	Name       string        `json:"name"`
	Type       string        `json:"type"`
	Query      any           `json:"query"`
	Datasource datasourceRef `json:"datasource"`
	IncludeAll bool          `json:"includeAll"`
	AllValue   string        `json:"allValue"`
	Multi      bool          `json:"multi"`
	Refresh    int           `json:"refresh"`
	Hide       int           `json:"hide"`
}

// queryText is the PromQL (or label_values call) of a query variable.
func (v variable) queryText() string {
	switch q := v.Query.(type) {
	case string:
		return q
	case map[string]any:
		s, _ := q["query"].(string)
		return s
	}
	return ""
}

type annotation struct {
	Name       string         `json:"name"`
	BuiltIn    int            `json:"builtIn"`
	Datasource datasourceRef  `json:"datasource"`
	Expr       string         `json:"expr"`
	Step       string         `json:"step"`
	Target     map[string]any `json:"target"`
}

type link struct {
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
}

type dashboard struct {
	file          string
	raw           map[string]any
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Tags          []string `json:"tags"`
	SchemaVersion int      `json:"schemaVersion"`
	Editable      bool     `json:"editable"`
	Links         []link   `json:"links"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

func (d *dashboard) variable(name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

// allPanels flattens rows into their panels; rows themselves are left out.
func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// fluxAnnotations are the dashboard's Prometheus annotation queries.
func (d *dashboard) fluxAnnotations() []annotation {
	var out []annotation
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 0 {
			out = append(out, a)
		}
	}
	return out
}

func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	names, err := fs.Glob(Files, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []*dashboard
	for _, name := range names {
		data, err := Files.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		d := &dashboard{file: name}
		if err := json.Unmarshal(data, d); err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		if err := json.Unmarshal(data, &d.raw); err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		out = append(out, d)
	}
	return out
}

func TestDashboardSet(t *testing.T) {
	got := map[string]string{}
	for _, d := range loadDashboards(t) {
		got[d.file] = d.UID
	}
	for file, uid := range wantDashboards {
		if got[file] != uid {
			t.Errorf("%s: uid %q, want %q", file, got[file], uid)
		}
	}
	for file := range got {
		if _, ok := wantDashboards[file]; !ok {
			t.Errorf("%s: unexpected dashboard; add it to wantDashboards with a stable uid", file)
		}
	}
}

func TestDashboardConventions(t *testing.T) {
	for _, d := range loadDashboards(t) {
		t.Run(d.file, func(t *testing.T) {
			if id, ok := d.raw["id"]; !ok || id != nil {
				t.Errorf("id must be present and null, got %v (present %v)", id, ok)
			}
			if !strings.HasPrefix(d.Title, "Flux / ") {
				t.Errorf("title %q should start with \"Flux / \"", d.Title)
			}
			if !slices.Contains(d.Tags, "flux") {
				t.Errorf("tags %v lack \"flux\"", d.Tags)
			}
			if d.SchemaVersion < 39 {
				t.Errorf("schemaVersion %d, want 39 or later", d.SchemaVersion)
			}
			if d.Editable {
				t.Error("dashboard must not be editable (dashboard-linter uneditable-dashboard)")
			}
			if !slices.ContainsFunc(d.Links, func(l link) bool {
				return l.Type == "dashboards" && slices.Contains(l.Tags, "flux") && l.IncludeVars && l.KeepTime
			}) {
				t.Error("no dashboards link by the flux tag that keeps time and variables")
			}
			ids := map[int]bool{}
			for _, p := range d.allPanels() {
				if ids[p.ID] {
					t.Errorf("panel id %d is used twice", p.ID)
				}
				ids[p.ID] = true
				if p.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
				}
				if p.Title == "" || p.Description == "" || len(p.Targets) == 0 {
					t.Errorf("panel %d %q needs a title, a description and a query", p.ID, p.Title)
				}
				for _, tg := range p.Targets {
					if tg.Datasource.UID != "${datasource}" {
						t.Errorf("panel %q target %s: datasource %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
					}
				}
			}
			for _, a := range d.fluxAnnotations() {
				if a.Datasource.UID != "${datasource}" {
					t.Errorf("annotation %q: datasource %q, want ${datasource}", a.Name, a.Datasource.UID)
				}
				// Older Grafana reads expr/step, newer reads target; they must agree.
				if a.Target["expr"] != a.Expr || a.Target["interval"] != a.Step || a.Expr == "" {
					t.Errorf("annotation %q: expr/step and target.expr/target.interval differ or are empty", a.Name)
				}
			}
		})
	}
}

func TestDashboardVariables(t *testing.T) {
	for _, d := range loadDashboards(t) {
		t.Run(d.file, func(t *testing.T) {
			ds, ok := d.variable("datasource")
			if !ok || ds.Type != "datasource" || ds.Query != "prometheus" {
				t.Errorf("datasource variable must pick Prometheus data sources, got %+v", ds)
			}
			cluster, ok := d.variable("cluster")
			switch {
			case !ok:
				t.Error("no cluster variable")
			case cluster.queryText() != "label_values(flux_exporter_build_info, cluster)":
				t.Errorf("cluster variable query %q", cluster.queryText())
			case !cluster.IncludeAll || cluster.AllValue != ".*":
				// ".*" also matches series without a cluster label.
				t.Errorf("cluster variable needs includeAll with allValue .*, got %v %q", cluster.IncludeAll, cluster.AllValue)
			case cluster.Hide != 2:
				t.Errorf("cluster variable hide %d, want 2 (hidden)", cluster.Hide)
			}
			wanted := []string{"job", "instance", "namespace", "kind"}
			if d.UID == "flux-resource-detail" {
				wanted = append(wanted, "name")
			}
			for _, name := range wanted {
				v, ok := d.variable(name)
				if !ok {
					t.Errorf("no %s variable", name)
					continue
				}
				if v.Type != "query" || v.Datasource.UID != "${datasource}" || v.Refresh != 2 {
					t.Errorf("%s variable must be a query on ${datasource} refreshed on time change, got %+v", name, v)
				}
				if !strings.HasPrefix(v.queryText(), "label_values(") {
					t.Errorf("%s variable query %q is not label_values()", name, v.queryText())
				}
			}
			for _, name := range []string{"job", "instance"} {
				if v, _ := d.variable(name); !v.Multi || !v.IncludeAll || v.AllValue != ".+" {
					t.Errorf("%s variable must be multi-value with allValue .+ (dashboard-linter), got %+v", name, v)
				}
			}
		})
	}
}

// exprs lists every PromQL query of a dashboard with a readable origin.
func (d *dashboard) exprs() map[string]string {
	out := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("%s panel %d %q target %s", d.file, p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, a := range d.fluxAnnotations() {
		out[fmt.Sprintf("%s annotation %q", d.file, a.Name)] = a.Expr
	}
	return out
}

var (
	selector       = regexp.MustCompile(`\b(flux_[a-z0-9_]+|up)\b(\{[^}]*\})?`)
	scopeMatchers  = []string{`cluster=~"$cluster"`, `job=~"$job"`, `instance=~"$instance"`}
	rateWithoutVar = regexp.MustCompile(`\brate\([^\[]*\[(?:[^$\]][^\]]*)\]`)
)

func TestQueriesUseKnownMetricsAndScope(t *testing.T) {
	knownMetrics, _ := knownMetrics(t)
	for _, d := range loadDashboards(t) {
		for origin, expr := range d.exprs() {
			matches := selector.FindAllStringSubmatch(expr, -1)
			if len(matches) == 0 {
				t.Errorf("%s: no metric in %q", origin, expr)
			}
			for _, m := range matches {
				if !slices.Contains(knownMetrics, m[1]) {
					t.Errorf("%s: unknown metric %s", origin, m[1])
				}
				for _, want := range scopeMatchers {
					if !strings.Contains(m[2], want) {
						t.Errorf("%s: selector %s%s lacks %s", origin, m[1], m[2], want)
					}
				}
			}
			if rateWithoutVar.MatchString(expr) {
				t.Errorf("%s: rate() must use [$__rate_interval]: %q", origin, expr)
			}
		}
	}
}

// TestOptionalTargets keeps the dashboards working on the default family
// set. A target that reads an opt-in family is optional: it reads nothing
// else, its panel has a target on default families that still shows
// something, and the panel's description names the family and the flag
// that turns it on, since the target shows nothing until then.
// Annotations read default families only.
func TestOptionalTargets(t *testing.T) {
	_, optIn := knownMetrics(t)
	reads := func(expr string) (def, opt []string) {
		for _, m := range selector.FindAllStringSubmatch(expr, -1) {
			if optIn[m[1]] {
				opt = append(opt, m[1])
			} else {
				def = append(def, m[1])
			}
		}
		return def, opt
	}
	for _, d := range loadDashboards(t) {
		for _, a := range d.fluxAnnotations() {
			if _, opt := reads(a.Expr); len(opt) > 0 {
				t.Errorf("%s annotation %q reads opt-in %v", d.file, a.Name, opt)
			}
		}
		for _, p := range d.allPanels() {
			shows := false
			for _, tg := range p.Targets {
				def, opt := reads(tg.Expr)
				where := fmt.Sprintf("%s panel %d %q target %s", d.file, p.ID, p.Title, tg.RefID)
				switch {
				case len(opt) == 0:
					shows = true
				case len(def) > 0:
					t.Errorf("%s reads opt-in %v with default %v: it would show nothing on the default set", where, opt, def)
				case !strings.Contains(p.Description, "--metric-opt-in-list"):
					t.Errorf("%s reads opt-in %v; the panel description must say that --metric-opt-in-list turns it on", where, opt)
				}
				for _, f := range opt {
					if !strings.Contains(p.Description, f) {
						t.Errorf("%s reads opt-in %s, which the panel description does not name", where, f)
					}
				}
			}
			if !shows {
				t.Errorf("%s panel %d %q reads only opt-in families: it is empty on the default set", d.file, p.ID, p.Title)
			}
		}
	}
}

var templateVar = regexp.MustCompile(`\$\{?[A-Za-z_]+\}?`)

// TestQueriesParse has promtool parse every panel and annotation query, with
// Grafana's variables replaced by sample values, as recording rules.
func TestQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (%v): install Debian's prometheus package with `apt-get update && apt-get install -y prometheus`", err)
	}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var origins []string
	for _, d := range loadDashboards(t) {
		for origin, expr := range d.exprs() {
			expr = strings.NewReplacer("$__rate_interval", "2m", "$__interval", "1m", "$__range_s", "604800", "$__range", "7d").Replace(expr)
			expr = templateVar.ReplaceAllString(expr, "sample")
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard_query_%d", len(rules)), Expr: expr})
			origins = append(origins, origin)
		}
	}
	// JSON is YAML, so promtool reads this as a rule file.
	data, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.rules.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		for i, o := range origins {
			t.Logf("dashboard_query_%d = %s", i, o)
		}
		t.Fatalf("promtool check rules on the dashboard queries: %v\n%s", err, out)
	}
	if len(rules) < 30 {
		t.Fatalf("only %d queries found; the dashboards lost panels", len(rules))
	}
}

var fencedBlock = regexp.MustCompile("(?s)```(promql|json)\n(.*?)```")

// TestReadmeAnnotationMatchesDashboard keeps the copyable change annotation in
// README.md identical to the fleet overview's, minus the dashboard variables.
func TestReadmeAnnotationMatchesDashboard(t *testing.T) {
	var want string
	for _, d := range loadDashboards(t) {
		if d.UID != "flux-fleet-overview" {
			continue
		}
		for _, a := range d.fluxAnnotations() {
			if a.Name == "Flux revisions" {
				want = strings.ReplaceAll(a.Expr,
					`cluster=~"$cluster", job=~"$job", instance=~"$instance", exported_namespace=~"$namespace", kind=~"$kind", `, "")
			}
		}
	}
	if want == "" || strings.Contains(want, `"$`) {
		t.Fatalf("fleet overview has no variable-free \"Flux revisions\" annotation: %q", want)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var promql, jsonExpr string
	for _, m := range fencedBlock.FindAllStringSubmatch(string(readme), -1) {
		switch m[1] {
		case "promql":
			promql = strings.TrimSpace(m[2])
		case "json":
			var snippet struct {
				Expr string `json:"expr"`
			}
			if err := json.Unmarshal([]byte(m[2]), &snippet); err != nil {
				t.Fatalf("README.md JSON snippet: %v", err)
			}
			jsonExpr = snippet.Expr
		}
	}
	if promql != want {
		t.Errorf("README.md promql block\n%s\ndiffers from the dashboard's\n%s", promql, want)
	}
	if jsonExpr != want {
		t.Errorf("README.md JSON snippet expr\n%s\ndiffers from the dashboard's\n%s", jsonExpr, want)
	}
}
