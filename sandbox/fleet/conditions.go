package fleet

// Conditions, as controllers edit them: lastTransitionTime moves only when
// the status does.

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// settled objects are not suspended, not stalled and not mid-reconciliation.
func settled(u *unstructured.Unstructured) bool {
	if s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); s {
		return false
	}
	if conditionStatus(u.Object, "Stalled") == "True" || conditionStatus(u.Object, "Reconciling") == "True" {
		return false
	}
	og, ok, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return !ok || og == u.GetGeneration()
}

// statusOf returns the object's status, adding an empty one if needed.
func statusOf(u *unstructured.Unstructured) map[string]any {
	st, ok := u.Object["status"].(map[string]any)
	if !ok {
		st = map[string]any{}
		u.Object["status"] = st
	}
	return st
}

func findCond(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _ := statusOf(u)["conditions"].([]any)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

func setCond(u *unstructured.Unstructured, typ, status, reason, msg string, now time.Time) {
	gen := u.GetGeneration()
	if c := findCond(u, typ); c != nil {
		if c["status"] != status {
			c["lastTransitionTime"] = ts(now)
		}
		c["status"], c["reason"], c["message"], c["observedGeneration"] = status, reason, msg, gen
		return
	}
	st := statusOf(u)
	conds, _ := st["conditions"].([]any)
	st["conditions"] = append(conds, cond(typ, status, reason, msg, gen, now))
}

func removeCond(u *unstructured.Unstructured, typ string) {
	st := statusOf(u)
	conds, _ := st["conditions"].([]any)
	out := conds[:0]
	for _, c := range conds {
		if m, ok := c.(map[string]any); !ok || m["type"] != typ {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		delete(st, "conditions")
		return
	}
	st["conditions"] = out
}

func hasStatusMap(u *unstructured.Unstructured) bool {
	_, ok := u.Object["status"].(map[string]any)
	return ok
}

func findCondCopy(u *unstructured.Unstructured, typ string) map[string]any {
	if !hasStatusMap(u) {
		return nil
	}
	c := findCond(u, typ)
	if c == nil {
		return nil
	}
	out := make(map[string]any, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}
