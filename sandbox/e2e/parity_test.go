package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/sandbox/apiserver"
	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

// fluxVersion is the flux CLI the suite holds the exporter to; tools/flux
// pins the same version.
const fluxVersion = "2.9.5"

// parityFleet is the default sandbox fleet's size, with every kind and every
// state the generator makes.
var parityFleet = fleet.Options{Seed: 1, Objects: 400, Namespaces: 5}

// TestFluxCLIParity holds the exporter to the pinned flux CLI on the sandbox
// fleet plus issue 10's inputs (testdata/parity/inputs.yaml): for every
// object `flux get` prints, READY, SUSPENDED and REVISION equal
// flux_resource_info's labels, and per kind `flux stats` RUNNING, FAILING,
// SUSPENDED and STORAGE equal counts over the exporter's series. Where the
// two disagree, the CLI is right (docs/metrics.md gives the queries).
func TestFluxCLIParity(t *testing.T) {
	flux := fluxCLI(t)
	c := newCluster(t, apiserver.ModeCRD)
	f, err := fleet.Generate(parityFleet)
	if err != nil {
		t.Fatal(err)
	}
	inputs := parityInputs(t)
	f.Objects = append(f.Objects, inputs...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := fleet.Apply(ctx, c.srv.RESTConfig(), f); err != nil {
		t.Fatal(err)
	}

	e := startExporter(t, c.kubeconfig)
	e.waitReady()
	var s scrape
	eventually(t, 30*time.Second, func() error {
		s = e.scrape()
		if got, want := len(s.find("flux_resource_info", nil)), len(f.Objects); got != want {
			return fmt.Errorf("%d flux_resource_info series, %d objects applied", got, want)
		}
		return nil
	})

	t.Run("flux get", func(t *testing.T) {
		rows := map[objectKey]cliRow{}
		for _, listing := range []struct {
			kind string // of a single-kind listing, whose names have no kind prefix
			args []string
		}{
			{"", []string{"get", "all", "-A"}},
			{"Alert", []string{"get", "alerts", "-A"}},
			{"Provider", []string{"get", "alert-providers", "-A"}},
			{"Receiver", []string{"get", "receivers", "-A"}},
		} {
			args := listing.args
			out := runFlux(t, flux, c.kubeconfig, args...)
			for _, r := range parseFluxGet(t, out, listing.kind, kindsByLower(s)) {
				if prev, dup := rows[r.key]; dup && !sameRow(prev, r) {
					t.Errorf("flux %s prints %s differently from an earlier command: %v vs %v", strings.Join(args, " "), r.key, r.cols, prev.cols)
				}
				rows[r.key] = r
			}
		}
		compareGet(t, s, rows)
	})

	t.Run("flux stats", func(t *testing.T) {
		out := runFlux(t, flux, c.kubeconfig, "stats", "-A")
		compareStats(t, s, parseTable(t, out))
	})

	t.Run("no credential in any label", func(t *testing.T) {
		secrets := secretsOf(t, f)
		if len(secrets) < 4 {
			t.Fatalf("the fleet holds only %d secrets to look for: %q", len(secrets), secrets)
		}
		for _, secret := range secrets {
			if strings.Contains(s.text, secret) {
				t.Errorf("the scrape contains the secret %q:\n%s", secret, grepLines(s.text, secret))
			}
		}
	})
}

// fluxCLI finds the pinned flux CLI: make test-e2e builds it into .bin,
// which it puts first on PATH.
func fluxCLI(t *testing.T) string {
	t.Helper()
	flux, err := exec.LookPath("flux")
	if err != nil {
		t.Fatalf("flux CLI not found (%v): run `make tools` and put .bin on PATH, or run `make test-e2e`, which does both", err)
	}
	out, err := exec.Command(flux, "version", "--client").CombinedOutput()
	if err != nil || !strings.Contains(string(out), fluxVersion) {
		t.Fatalf("%s is not flux %s (%v): %s; run `make tools`", flux, fluxVersion, err, out)
	}
	return flux
}

func runFlux(t *testing.T, flux, kubeconfig string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, flux, append(args, "--kubeconfig", kubeconfig)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The CLI must not read the developer's own config or cluster.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "KUBECONFIG="+kubeconfig)
	if err := cmd.Run(); err != nil {
		t.Fatalf("flux %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
	}
	if stdout.Len() == 0 {
		t.Fatalf("flux %s printed nothing; stderr:\n%s", strings.Join(args, " "), &stderr)
	}
	return stdout.String()
}

// parityInputs reads issue 10's inputs as fleet objects.
func parityInputs(t *testing.T) []*fleet.Object {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "parity", "inputs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*fleet.Object
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("testdata/parity/inputs.yaml: %v", err)
		}
		o, err := fleet.FromManifest(u)
		if err != nil {
			t.Fatalf("testdata/parity/inputs.yaml: %v", err)
		}
		out = append(out, o)
	}
	return out
}

type objectKey struct{ kind, namespace, name string }

func (k objectKey) String() string { return k.kind + " " + k.namespace + "/" + k.name }

// cliRow is one object as flux get prints it: its columns by header.
type cliRow struct {
	key  objectKey
	cols map[string]string
}

func sameRow(a, b cliRow) bool {
	for _, col := range []string{"READY", "SUSPENDED", "REVISION"} {
		if a.cols[col] != b.cols[col] {
			return false
		}
	}
	return true
}

// kindsByLower maps `flux get all`'s lower-case kind prefix
// ("gitrepository/name") to the kind the exporter reports.
func kindsByLower(s scrape) map[string]string {
	out := map[string]string{}
	for _, m := range s.find("flux_exporter_kind_info", nil) {
		k := labels(m)["kind"]
		out[strings.ToLower(k)] = k
	}
	return out
}

// parseTable splits the CLI's tables (tablewriter, tab-separated cells)
// into sections, each a header and its rows.
func parseTable(t *testing.T, out string) [][]map[string]string {
	t.Helper()
	var sections [][]map[string]string
	var header []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			// A message that ends in a newline, as kustomize-controller's
			// apply errors do, pushes the row's closing separator onto a
			// line of its own; a truly blank line ends the section.
			if !strings.Contains(line, "\t") {
				header = nil
			}
			continue
		}
		// Data rows end with the cell separator, the header does not.
		cells := strings.Split(strings.TrimSuffix(line, "\t"), "\t")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			sections = append(sections, nil)
			continue
		}
		if len(cells) != len(header) {
			t.Fatalf("flux row %q has %d cells, its header %q has %d", line, len(cells), header, len(header))
		}
		row := map[string]string{}
		for i, h := range header {
			row[h] = cells[i]
		}
		sections[len(sections)-1] = append(sections[len(sections)-1], row)
	}
	return sections
}

// parseFluxGet reads the objects out of a flux get listing. `get all`
// prefixes names with the lower-case kind; a single-kind listing does not,
// and its kind is given.
func parseFluxGet(t *testing.T, out, kind string, kinds map[string]string) []cliRow {
	t.Helper()
	var rows []cliRow
	for _, section := range parseTable(t, out) {
		for _, r := range section {
			name, ns := r["NAME"], r["NAMESPACE"]
			if ns == "" || name == "" {
				t.Fatalf("flux row without NAMESPACE or NAME: %v", r)
			}
			k := kind
			if k == "" {
				prefix, rest, ok := strings.Cut(name, "/")
				if k, ok = kinds[prefix]; !ok {
					t.Fatalf("flux prints %q, whose kind the exporter does not report", name)
				}
				name = rest
			}
			rows = append(rows, cliRow{key: objectKey{k, ns, name}, cols: r})
		}
	}
	return rows
}

// hexRun is what the CLI shortens: 40 to 128 hex digits, a SHA-1 to a
// SHA-512, as a word.
var hexRun = regexp.MustCompile(`\b[a-f0-9]{40,128}\b`)

func shortenHex(s string) string {
	return hexRun.ReplaceAllStringFunc(s, func(h string) string { return h[:8] })
}

func compareGet(t *testing.T, s scrape, rows map[objectKey]cliRow) {
	t.Helper()
	infos := map[objectKey]map[string]string{}
	for _, m := range s.find("flux_resource_info", nil) {
		l := labels(m)
		infos[objectKey{l["kind"], l["exported_namespace"], l["name"]}] = l
	}
	printed := map[string]bool{}
	for key, r := range rows {
		printed[key.kind] = true
		info, ok := infos[key]
		if !ok {
			t.Errorf("flux get prints %s, the exporter has no flux_resource_info for it", key)
			continue
		}
		for _, c := range []struct{ col, label, want string }{
			{"READY", "ready", info["ready"]},
			{"SUSPENDED", "suspended", info["suspended"]},
			{"REVISION", "revision", shortenHex(info["revision"])},
		} {
			got, ok := r.cols[c.col]
			if !ok {
				continue // the CLI has no such column for this kind
			}
			if got != c.want {
				t.Errorf("%s: flux get %s %q, the exporter's %s %q", key, c.col, got, c.label, info[c.label])
			}
		}
		// ImagePolicy prints the selected image and tag instead of a revision.
		if img, ok := r.cols["IMAGE"]; ok && img != "" {
			if prefix := img + ":" + r.cols["TAG"]; !strings.HasPrefix(info["revision"], prefix) {
				t.Errorf("%s: flux get IMAGE:TAG %q, the exporter's revision %q", key, prefix, info["revision"])
			}
		}
	}
	// Every object of a kind the CLI lists is printed: nothing extra, nothing missing.
	for key := range infos {
		if _, ok := rows[key]; !ok && printed[key.kind] {
			t.Errorf("the exporter reports %s, flux get does not print it", key)
		}
	}
	if len(rows) < 400 {
		t.Errorf("flux get printed only %d objects", len(rows))
	}
}

// compareStats checks flux stats' per-kind counts against the exporter's
// series, computed as docs/metrics.md says: RUNNING and SUSPENDED from
// flux_resource_info's suspended label, FAILING from the Ready condition,
// STORAGE from the artifact sizes.
func compareStats(t *testing.T, s scrape, sections [][]map[string]string) {
	t.Helper()
	if len(sections) != 1 || len(sections[0]) == 0 {
		t.Fatalf("flux stats printed %d tables", len(sections))
	}
	type counts struct {
		running, failing, suspended int
		size                        int64
	}
	byKind := map[string]*counts{}
	at := func(kind string) *counts {
		if byKind[kind] == nil {
			byKind[kind] = &counts{}
		}
		return byKind[kind]
	}
	for _, m := range s.find("flux_resource_info", nil) {
		l := labels(m)
		if l["suspended"] == "True" {
			at(l["kind"]).suspended++
		} else {
			at(l["kind"]).running++
		}
	}
	for _, m := range s.find("flux_resource_condition", map[string]string{"type": "Ready", "status": "False"}) {
		at(labels(m)["kind"]).failing++
	}
	for _, m := range s.find("flux_source_artifact_size_bytes", nil) {
		at(labels(m)["kind"]).size += int64(m.GetGauge().GetValue())
	}
	seen := 0
	for _, r := range sections[0] {
		kind := r["RECONCILERS"]
		c := at(kind)
		want := map[string]string{
			"RUNNING":   fmt.Sprint(c.running),
			"FAILING":   fmt.Sprint(c.failing),
			"SUSPENDED": fmt.Sprint(c.suspended),
			"STORAGE":   humanBytes(c.size),
		}
		for col, exp := range want {
			if r[col] != exp {
				t.Errorf("flux stats %s %s = %q, from the exporter's series %q", kind, col, r[col], exp)
			}
		}
		if c.running+c.suspended > 0 {
			seen++
		}
	}
	if seen < 13 {
		t.Errorf("flux stats covered %d kinds with objects, want every kind it lists (13)", seen)
	}
}

// humanBytes spells a size as flux stats does: "-" for none, bytes below
// 1 KiB, else one decimal in the largest binary unit.
func humanBytes(n int64) string {
	if n == 0 {
		return "-"
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := "KMGTPE"
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// webhookProviders are Provider types whose address carries its secret in
// the URL path (docs/flux-semantics.md, rule 5).
var webhookProviders = map[string]bool{"slack": true, "msteams": true, "discord": true, "googlechat": true, "rocket": true, "webex": true, "lark": true}

var (
	urlPassword = regexp.MustCompile(`://[^/@]*:([^@/]+)@`)
	queryValue  = regexp.MustCompile(`[?&][^=]+=([^&#]+)`)
)

// secretsOf lists every credential the applied objects hold in a field
// that could reach a label: URL passwords and query values, Receiver
// webhook path hashes, and the paths of webhook Provider addresses.
func secretsOf(t *testing.T, f *fleet.Fleet) []string {
	t.Helper()
	set := map[string]bool{}
	for _, o := range f.Objects {
		obj := o.Object.Object
		for _, field := range []string{"url", "endpoint", "address"} {
			v, _, _ := unstructured.NestedString(obj, "spec", field)
			for _, m := range urlPassword.FindAllStringSubmatch(v, -1) {
				set[m[1]] = true
			}
			for _, m := range queryValue.FindAllStringSubmatch(v, -1) {
				set[m[1]] = true
			}
		}
		if typ, _, _ := unstructured.NestedString(obj, "spec", "type"); o.Kind == "Provider" && webhookProviders[typ] {
			addr, _, _ := unstructured.NestedString(obj, "spec", "address")
			if _, path, ok := strings.Cut(strings.TrimPrefix(addr, "https://"), "/"); ok {
				set[path] = true
			}
		}
		if p, _, _ := unstructured.NestedString(obj, "status", "webhookPath"); p != "" {
			set[strings.TrimPrefix(p, "/hook/")] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
