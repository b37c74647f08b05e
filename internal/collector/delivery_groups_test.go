package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// teamKustomization is a Kustomization of namespace ns labelled team,
// whose history holds one successful entry per digest, applied at the
// offsets given.
func teamKustomization(ns, name, uid, team string, applied ...time.Duration) string {
	var h []string
	for i := len(applied) - 1; i >= 0; i-- {
		h = append(h, ksEntry(fmt.Sprintf("sha256:%s%d", name, i), "ReconciliationSucceeded", revA, applied[i], applied[i]))
	}
	return fmt.Sprintf(`
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: %s, namespace: %s, uid: %s, labels: {team: %q}}
spec: {sourceRef: {kind: GitRepository, name: app}}
status:
  conditions:
  - {type: Ready, status: "True", reason: ReconciliationSucceeded, lastTransitionTime: %q}
  history:%s
`, name, ns, uid, team, at(0), strings.Join(h, ""))
}

// decodeAsInformer decodes doc as the informer of its kind would, resource
// name included, which the labels allowlist goes by.
func decodeAsInformer(t *testing.T, d *Decoder, doc string) *Record {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("bad test object: %v", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	rec, errs := d.Decode(kube.Kind{Kind: u.GetKind(), Resource: strings.ToLower(u.GetKind()) + "s"}, u, nil)
	if len(errs) > 0 {
		t.Fatalf("decode faults: %v", errs)
	}
	return rec
}

// groupSamples renders the tracker's group series in the text format, as
// "name{labels}" → value.
func groupSamples(t *testing.T, d *Decoder) map[string]float64 {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeObjects(w, d.delivery.records(), textFloat); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	out := map[string]float64{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func teamDecoder(t *testing.T) *Decoder {
	t.Helper()
	labels, _, err := ParseMetadataAllowlist("--metric-labels-allowlist", "kustomizations=[team]")
	if err != nil {
		t.Fatal(err)
	}
	return NewDecoder(DecoderOptions{Labels: labels})
}

const (
	groupA = `exported_namespace="shop",kind="Kustomization",label_team="a"`
	groupB = `exported_namespace="shop",kind="Kustomization",label_team="b"`
)

// TestDeliveryGroupsAddUp: the default set's delivery series add the
// objects up per namespace, kind and allowlisted label, and render no
// per-object counter or histogram.
func TestDeliveryGroupsAddUp(t *testing.T) {
	d := teamDecoder(t)
	one := decodeAsInformer(t, d, teamKustomization("shop", "one", "u1", "a", time.Minute))
	decodeAsInformer(t, d, teamKustomization("shop", "two", "u2", "a", time.Minute, 2*time.Minute))
	decodeAsInformer(t, d, teamKustomization("shop", "three", "u3", "b"))
	got := groupSamples(t, d)
	expectSamples(t, "three objects", got, map[string]float64{
		`flux_delivery_changes_total{` + groupA + `,result="succeeded"}`:         3,
		`flux_delivery_changes_total{` + groupA + `,result="failed"}`:            0,
		`flux_delivery_changes_total{` + groupB + `,result="succeeded"}`:         0,
		`flux_delivery_failed_changes_total{` + groupB + `}`:                     0,
		`flux_delivery_lead_time_seconds_count{` + groupB + `}`:                  0,
		`flux_delivery_time_to_restore_seconds_bucket{` + groupA + `,le="+Inf"}`: 0,
	})
	if n := len(got); n != 2*(2+1+10+9) {
		t.Errorf("%d group series, want 2 groups of 22: %v", n, got)
	}
	if per := one.delivery.record(); per == nil || len(per.series) != 0 {
		t.Errorf("the default set renders per-object delivery series: %v", per)
	}
}

// TestDeliveryGroupsOnlyGrow: an object that leaves its group, deleted or
// relabelled, takes nothing of what it added with it, and a group goes
// with its last object.
func TestDeliveryGroupsOnlyGrow(t *testing.T) {
	d := teamDecoder(t)
	one := decodeAsInformer(t, d, teamKustomization("shop", "one", "u1", "a", time.Minute))
	two := decodeAsInformer(t, d, teamKustomization("shop", "two", "u2", "a", time.Minute, 2*time.Minute))
	succeededA := `flux_delivery_changes_total{` + groupA + `,result="succeeded"}`
	succeededB := `flux_delivery_changes_total{` + groupB + `,result="succeeded"}`

	// two moves to team b with a new change: a keeps its 3, b gets 1.
	decodeAsInformer(t, d, teamKustomization("shop", "two", "u2", "b", time.Minute, 2*time.Minute, 3*time.Minute))
	expectSamples(t, "relabelled", groupSamples(t, d), map[string]float64{succeededA: 3, succeededB: 1})

	// two is made again under its name (a new UID): its history starts
	// over in its group, which it does not join twice.
	two = decodeAsInformer(t, d, teamKustomization("shop", "two", "u2b", "b"))
	if g := d.delivery.groups[groupKey("Kustomization", "shop", []labelPair{{"label_team", "b"}})]; g == nil || g.members != 1 {
		t.Fatalf("team b's group after two was made again: %+v", g)
	}
	expectSamples(t, "made again", groupSamples(t, d), map[string]float64{succeededA: 3, succeededB: 1})

	// one is deleted: a goes with its last object.
	sweepWith(d, []*Record{two})
	expectSamples(t, "one deleted", groupSamples(t, d), map[string]float64{succeededB: 1})
	if _, ok := groupSamples(t, d)[succeededA]; ok {
		t.Errorf("team a's group outlived its last object %s", one.Name)
	}
}

// sweepWith makes the tracker forget every object but live's, as a sweep
// after they were deleted does.
func sweepWith(d *Decoder, live []*Record) {
	tr := d.delivery
	tr.mu.Lock()
	for _, e := range tr.objects {
		e.lastDecoded = time.Now().Add(-2 * sweepEvery)
	}
	tr.swept = time.Time{}
	tr.mu.Unlock()
	tr.sweep([]kube.KindState[*Record]{{Kind: kube.Kind{Kind: "Kustomization"}, Records: live}})
}

// TestDeliveryGroupsMatchClientGolang holds the groups' rendering to
// client_golang's encoders, in both formats.
func TestDeliveryGroupsMatchClientGolang(t *testing.T) {
	// Without an allowlist: client_golang's registry wants one label set
	// per family, which the kinds the allowlist names and those it does
	// not would differ in (Prometheus takes both).
	d := NewDecoder(DecoderOptions{})
	decodeInto(t, d, gitRepo(revA, 0))
	decodeAsInformer(t, d, teamKustomization("shop", "one", "u1", "a", time.Minute, 2*time.Minute))
	decodeAsInformer(t, d, teamKustomization("other", "two", "u2", "b", time.Minute))
	decodeInto(t, d, helmRelease("2.0.0",
		conds([4]string{"Ready", "False", "RollbackSucceeded", at(time.Hour)}, [4]string{"Remediated", "True", "RollbackSucceeded", at(2 * time.Hour)}),
		hrSnap(3, "deployed", "rollback", "1.0.0", 2*time.Hour),
		hrSnap(2, "failed", "upgrade", "2.0.0", time.Hour)))
	for _, f := range []expfmt.Format{expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics)} {
		if err := sameAsClientGolang(d.delivery.records(), f); err != nil {
			t.Error(err)
		}
	}
}
