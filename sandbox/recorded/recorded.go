// Package recorded holds timelines recorded from the real Flux controllers:
// the fixture format that cmd/flux-record writes and the e2e timelines
// replay, and the mapping of a recording, made with short intervals, onto
// the timelines' simulated clock.
package recorded

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Fixture is one scenario as the real controllers wrote it.
type Fixture struct {
	// Scenario names the recorder's script that produced the fixture.
	Scenario string `json:"scenario"`
	// Why says what the scenario shows.
	Why string `json:"why"`
	// Controllers maps each controller that ran to its release, read
	// from the binary's build information.
	Controllers map[string]string `json:"controllers"`
	// Flags are the flags each controller ran with, its addresses and
	// storage path aside.
	Flags map[string][]string `json:"flags"`
	// Start is the wall-clock time of offset 0.
	Start time.Time `json:"start"`
	// Actions are what the recorder did, in order: the causes.
	Actions []Action `json:"actions"`
	// States are the writes seen on the API server, in order: the effects.
	States []State `json:"states"`
}

// Action is one thing the recorder did: a commit, an edit of a spec.
type Action struct {
	At Offset `json:"at"`
	Do string `json:"do"`
}

// State is one object as it was stored after a write.
type State struct {
	// At is when the recorder's watch delivered the write.
	At Offset `json:"at"`
	// By is the field manager that made the write: the controller's name,
	// or the recorder's for its own changes of a spec.
	By string `json:"by"`
	// Object is the stored object without server bookkeeping
	// (managedFields, resourceVersion, uid, creationTimestamp).
	Object map[string]any `json:"object"`
}

// Offset is a duration since Fixture.Start, written as "12.345s".
type Offset time.Duration

// MarshalJSON writes the offset in seconds with millisecond precision.
func (o Offset) MarshalJSON() ([]byte, error) {
	return json.Marshal(strconv.FormatFloat(time.Duration(o).Seconds(), 'f', 3, 64) + "s")
}

// UnmarshalJSON reads a Go duration string.
func (o *Offset) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("offset %s: %w", b, err)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("offset %s: %w", b, err)
	}
	*o = Offset(d)
	return nil
}

// Read loads a fixture; it fails on unknown fields and on a fixture with
// no states.
func Read(path string) (*Fixture, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fixture: %w", err)
	}
	var f Fixture
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("fixture %s: %w", path, err)
	}
	if len(f.States) == 0 {
		return nil, fmt.Errorf("fixture %s: no recorded states", path)
	}
	return &f, nil
}

// Header is written at the top of every fixture file.
const Header = "# Recorded from the real Flux controllers by sandbox/cmd/flux-record\n" +
	"# (make record-timelines). Do not edit: record again.\n"

// Write stores f as YAML at path, with Header.
func (f *Fixture) Write(path string) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode fixture %s: %w", f.Scenario, err)
	}
	if err := os.WriteFile(path, append([]byte(Header), b...), 0o644); err != nil {
		return fmt.Errorf("write fixture: %w", err)
	}
	return nil
}

// Clock maps a recording onto a simulated clock: an offset d of the
// recording happens at Epoch + d*Scale, and so do the times the
// controllers wrote. A recording made with 2s intervals replayed at scale
// 60 is the timeline of the same objects with 2m intervals.
type Clock struct {
	Start time.Time // the recording's offset 0
	Epoch time.Time // the simulated clock's time 0
	Scale int
}

// At is where offset o lands on the simulated clock, since Epoch.
func (c Clock) At(o Offset) time.Duration { return time.Duration(o) * time.Duration(c.Scale) }

// Object returns a copy of obj moved onto the simulated clock: every
// RFC 3339 time in it, and every interval, retryInterval and timeout of its
// spec. Other durations (how long one Helm action took) are left as the
// controller measured them.
func (c Clock) Object(obj map[string]any) map[string]any {
	out, _ := c.value(obj, "").(map[string]any)
	return out
}

func (c Clock) value(v any, key string) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = c.value(e, k)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = c.value(e, key)
		}
		return s
	case string:
		return c.scalar(v, key)
	}
	return v
}

// intervals are the spec fields whose durations the recorder shortened.
var intervals = map[string]bool{"interval": true, "retryInterval": true, "timeout": true}

func (c Clock) scalar(s, key string) string {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil && strings.Contains(s, "T") {
		return c.Epoch.Add(time.Duration(c.Scale) * t.Sub(c.Start)).UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	if intervals[key] {
		if d, err := time.ParseDuration(s); err == nil {
			return (d * time.Duration(c.Scale)).String()
		}
	}
	return s
}

// Equal tells whether two stored objects, or parts of them, are the same.
func Equal(a, b any) bool { return reflect.DeepEqual(a, b) }
