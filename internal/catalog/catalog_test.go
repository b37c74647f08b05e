package catalog

import (
	"strings"
	"testing"
)

func TestList(t *testing.T) {
	var l List
	d := l.Declare(Family{Name: "flux_b_total", Type: Counter, Help: "B.", Labels: []string{"kind"}})
	l.Declare(Family{Name: "flux_a", Type: Gauge, Help: "A."})
	if !strings.Contains(d.String(), `fqName: "flux_b_total"`) || !strings.Contains(d.String(), "variableLabels: {kind}") {
		t.Errorf("descriptor %s does not say the family", d)
	}
	got := l.Families()
	if len(got) != 2 || got[0].Name != "flux_a" || got[1].Name != "flux_b_total" || got[1].Type != Counter {
		t.Fatalf("Families() = %+v, want flux_a then flux_b_total", got)
	}
	got[0].Name = "changed"
	if l.Families()[0].Name != "flux_a" {
		t.Error("Families() shares its slice with the list")
	}
}
