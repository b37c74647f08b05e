package kube

// Failed list and watch requests, counted per kind by a RoundTripper.

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// failureCounter counts every failed list or watch request against its kind.
// client-go retries refused connections and 429s inside the reflector
// without calling the watch error handler, so an API server outage would
// otherwise show no errors at all; the transport sees every attempt.
type failureCounter struct {
	next http.RoundTripper
	// scopeOf finds the kind and informer a request path belongs to.
	scopeOf func(path string) (*kindWatch, *scope)
	log     *slog.Logger
}

func (f *failureCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	// 410 Gone is the normal end of an expired watch, not a failure.
	failed := err != nil || (resp.StatusCode >= 400 && resp.StatusCode != http.StatusGone)
	kw, sc := f.scopeOf(req.URL.Path)
	if kw == nil {
		return resp, err
	}
	if failed {
		kw.watchErrors.Add(1)
	}
	if sc == nil {
		return resp, err
	}
	k := kw.kind
	attrs := []any{"kind", k.Kind, "group", k.Group}
	if sc.namespace != "" {
		attrs = append(attrs, "namespace", sc.namespace)
	}
	switch {
	case failed && err == nil && resp.StatusCode == http.StatusForbidden:
		// RBAC, not an outage: retries cannot fix it, so say once what
		// would, and stop readiness waiting for this informer.
		sc.failing.Store(true)
		if !sc.forbidden.Swap(true) {
			f.log.Error("Forbidden to list and watch a Flux kind; it reports no objects and /-/ready does not wait for it",
				append(attrs, "fix", fmt.Sprintf("grant get, list, watch on %s/%s to the exporter's ServiceAccount, or drop %s from --flux.api-groups", k.Group, k.Resource, k.Group))...)
		}
	case failed && !sc.failing.Swap(true):
		reason := fmt.Sprint(err)
		if err == nil {
			reason = resp.Status
		}
		f.log.Warn("Requests for a Flux kind are failing; serving the cached objects while client-go retries",
			append(attrs, "err", reason)...)
	case !failed:
		sc.forbidden.Store(false)
		if sc.failing.Swap(false) {
			f.log.Info("Requests for a Flux kind succeed again", attrs...)
		}
	}
	return resp, err
}

// scopeOfPath maps /apis/<group>/<version>[/namespaces/<ns>]/<resource> to
// its watched kind and to the informer's scope that made the request, or
// nil when no informer of the kind watches that namespace.
func (w *Watcher[R]) scopeOfPath(path string) (*kindWatch, *scope) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 4 || parts[0] != "apis" {
		return nil, nil
	}
	group, rest, ns := parts[1], parts[3:], ""
	if rest[0] == "namespaces" && len(rest) >= 3 {
		ns, rest = rest[1], rest[2:]
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, kw := range w.kinds {
		if kw.kind.Group != group || kw.kind.Resource != rest[0] {
			continue
		}
		for _, sc := range kw.scopes {
			if sc.namespace == ns {
				return kw, sc
			}
		}
		return kw, nil
	}
	return nil, nil
}
