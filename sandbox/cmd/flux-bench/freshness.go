package main

// Freshness: how long after a GitRepository turns Ready (or not) each
// exporter shows it.

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/flux-exporter/flux_exporter/sandbox/fleet"
)

var gitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}

// flipTarget is the object whose Ready condition the freshness test flips.
type flipTarget struct {
	namespace, name string
	client          dynamic.ResourceInterface
}

// pickFlip takes the first Ready, unsuspended GitRepository of the fleet.
func pickFlip(f *fleet.Fleet) (*flipTarget, error) {
	for _, o := range f.Objects {
		if o.Kind == fleet.KindGitRepository && o.State == fleet.StateReady && !o.Suspended {
			return &flipTarget{namespace: o.Namespace(), name: o.Name()}, nil
		}
	}
	return nil, errors.New("the fleet has no Ready, unsuspended GitRepository to flip: use more --objects")
}

// setReady rewrites the object's Ready condition as source-controller would
// after a failed or a successful fetch.
func setReady(u *unstructured.Unstructured, status string, now time.Time) error {
	conds, _, err := unstructured.NestedSlice(u.Object, "status", "conditions")
	if err != nil {
		return fmt.Errorf("read conditions: %w", err)
	}
	reason, msg := "Succeeded", "stored artifact for revision"
	if status == "False" {
		reason, msg = "GitOperationFailed", "failed to checkout and determine revision"
	}
	found := false
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		m["status"], m["reason"], m["message"] = status, reason, msg
		m["lastTransitionTime"] = now.UTC().Format(time.RFC3339)
		found = true
	}
	if !found {
		return errors.New("no Ready condition")
	}
	return unstructured.SetNestedSlice(u.Object, conds, "status", "conditions")
}

// freshness flips the object's Ready condition cfg.freshness times and, each
// time, scrapes back to back until the new status shows, timing from just
// before the status write to the end of the first scrape that shows it.
func freshness(ctx context.Context, cfg *config, t *target, s *scraper, flip *flipTarget) ([]time.Duration, error) {
	// Each flip is bounded; a change that takes longer is not fresh.
	const perFlip = 5 * time.Minute
	var out []time.Duration
	for i := range cfg.freshness {
		u, err := flip.client.Get(ctx, flip.name, metav1.GetOptions{})
		if err != nil {
			return out, fmt.Errorf("get GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		current, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		want := "False"
		if readyOf(current) == "False" {
			want = "True"
		}
		if err := setReady(u, want, time.Now()); err != nil {
			return out, fmt.Errorf("GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		start := time.Now()
		if _, err := flip.client.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			return out, fmt.Errorf("update status of GitRepository %s/%s: %w", flip.namespace, flip.name, err)
		}
		for {
			if time.Since(start) > perFlip {
				return out, fmt.Errorf("flip %d: ready=%q not seen within %s", i+1, want, perFlip)
			}
			sc, err := s.scrape(ctx, true)
			if err != nil {
				return out, err
			}
			plain, err := decode(sc.body, sc.encoding)
			if err != nil {
				return out, err
			}
			got, ok, err := findLabel(plain, t.readyFamily, t.readyMatch, "ready")
			if err != nil {
				return out, err
			}
			if ok && got == want {
				out = append(out, sc.end.Sub(start))
				break
			}
		}
	}
	return out, nil
}

func readyOf(conds []any) string {
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}
