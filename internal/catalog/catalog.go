// Package catalog describes the metric families flux_exporter can emit:
// each family's name, type, help and labels, declared once where the
// family is defined, so that the metrics reference and the tests read
// them instead of parsing descriptors.
package catalog

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace starts the name of every family flux_exporter emits.
const Namespace = "flux"

// Type is a family's metric type, as the exposition formats name it.
type Type string

// The metric types flux_exporter emits.
const (
	Gauge     Type = "gauge"
	Counter   Type = "counter"
	Histogram Type = "histogram"
	Summary   Type = "summary"
)

// Family describes one metric family.
type Family struct {
	Name   string
	Type   Type
	Help   string
	Labels []string
	// PerObject marks the families with series per Flux object, whose
	// cost grows with the fleet.
	PerObject bool
	// OptIn marks the per-object families that are off by default: they
	// are exported only when --metric-opt-in-list names them, so that the
	// default costs a few series per object.
	OptIn bool
}

// Desc is the family's client_golang descriptor.
func (f Family) Desc() *prometheus.Desc { return prometheus.NewDesc(f.Name, f.Help, f.Labels, nil) }

// List collects the families a package declares. Packages fill theirs
// while their variables are initialised and only read it afterwards.
type List struct{ families []Family }

// Declare adds f and returns its descriptor.
func (l *List) Declare(f Family) *prometheus.Desc {
	l.families = append(l.families, f)
	return f.Desc()
}

// Families returns the declared families, sorted by name.
func (l *List) Families() []Family {
	out := slices.Clone(l.families)
	slices.SortFunc(out, func(a, b Family) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
