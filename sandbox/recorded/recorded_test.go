package recorded

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestClockObject(t *testing.T) {
	start := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	c := Clock{Start: start, Epoch: time.Unix(0, 0).UTC(), Scale: 60}
	in := map[string]any{
		"metadata": map[string]any{"name": "apps", "annotations": map[string]any{
			"reconcile.fluxcd.io/requestedAt": "2026-12-06T01:00:10.123456789Z"}},
		"spec": map[string]any{"interval": "10s", "retryInterval": "2s", "path": "./apps",
			"install": map[string]any{"timeout": "500ms"}},
		"status": map[string]any{
			"observedGeneration": int64(-1),
			"conditions": []any{map[string]any{"type": "Ready", "lastTransitionTime": "2026-12-06T01:00:30Z",
				"message": "retrying in 30s"}},
			"lastAttemptedReleaseActionDuration": "359.041941ms",
			"lastAttemptedRevision":              "main@sha1:aaaa",
		},
	}
	want := map[string]any{
		"metadata": map[string]any{"name": "apps", "annotations": map[string]any{
			"reconcile.fluxcd.io/requestedAt": "1970-01-01T00:10:07Z"}},
		"spec": map[string]any{"interval": "10m0s", "retryInterval": "2m0s", "path": "./apps",
			"install": map[string]any{"timeout": "30s"}},
		"status": map[string]any{
			"observedGeneration": int64(-1),
			"conditions": []any{map[string]any{"type": "Ready", "lastTransitionTime": "1970-01-01T00:30:00Z",
				"message": "retrying in 30s"}},
			"lastAttemptedReleaseActionDuration": "359.041941ms",
			"lastAttemptedRevision":              "main@sha1:aaaa",
		},
	}
	if got := c.Object(in); !reflect.DeepEqual(got, want) {
		t.Errorf("Object:\n got %#v\nwant %#v", got, want)
	}
	if got := c.At(Offset(1500 * time.Millisecond)); got != 90*time.Second {
		t.Errorf("At(1.5s) = %s, want 1m30s", got)
	}
	if in["spec"].(map[string]any)["interval"] != "10s" {
		t.Error("Object changed its input")
	}
}

func TestFixtureRoundTrip(t *testing.T) {
	f := &Fixture{
		Scenario: "s", Why: "w", Controllers: map[string]string{"helm-controller": "v1.6.2"},
		Start:   time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC),
		Actions: []Action{{At: Offset(250 * time.Millisecond), Do: "commit"}},
		States:  []State{{At: Offset(1234 * time.Millisecond), By: "helm-controller", Object: map[string]any{"kind": "HelmRelease"}}},
	}
	p := filepath.Join(t.TempDir(), "s.yaml")
	if err := f.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("read back %#v, wrote %#v", got, f)
	}
	empty := &Fixture{Scenario: "e"}
	if err := empty.Write(p); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(p); err == nil {
		t.Error("Read accepted a fixture without states")
	}
}
