package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"time"
)

// Header names used by notification-controller's generic and generic-hmac
// providers.
const (
	signatureHeader = "X-Signature"
	componentHeader = "Gotk-Component"
)

// maxLabelBytes bounds every value that becomes a label, so a sender cannot
// make a single series arbitrarily large. Kubernetes names are at most 253
// bytes and condition reasons at most 1024.
const maxLabelBytes = 1024

// The severities Flux defines (fluxcd/pkg/apis/event). Anything else is not a
// Flux event and would only add label values.
var severities = map[string]bool{"trace": true, "info": true, "error": true}

// hashes are the HMAC algorithms notification-controller documents for the
// X-Signature header.
var hashes = map[string]func() hash.Hash{
	"sha224": sha256.New224,
	"sha256": sha256.New,
	"sha384": sha512.New384,
	"sha512": sha512.New,
}

// requestError carries the HTTP status a rejected request is answered with.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return e.msg }

func reject(code int, format string, args ...any) error {
	return &requestError{code: code, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error from the request pipeline to its HTTP status.
func statusOf(err error) int {
	if err == nil {
		return http.StatusAccepted
	}
	var re *requestError
	if errors.As(err, &re) {
		return re.code
	}
	return http.StatusBadRequest
}

// objectRef holds the fields of corev1.ObjectReference that notification-
// controller sends as involvedObject.
type objectRef struct {
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	APIVersion string `json:"apiVersion"`
}

// group returns the API group of apiVersion ("" for the core group).
func (o objectRef) group() string {
	g, _, ok := strings.Cut(o.APIVersion, "/")
	if !ok {
		return ""
	}
	return g
}

// eventTime decodes metav1.Time: an RFC 3339 string, or null for "unset".
type eventTime struct{ time.Time }

func (t *eventTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	parsed, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	t.Time = parsed
	return nil
}

// event is the subset of eventv1.Event the receiver uses. Unknown fields
// (action, relatedObject, fields added by later Flux versions) are ignored.
type event struct {
	InvolvedObject      objectRef         `json:"involvedObject"`
	Severity            string            `json:"severity"`
	Timestamp           eventTime         `json:"timestamp"`
	Message             string            `json:"message"`
	Reason              string            `json:"reason"`
	Metadata            map[string]string `json:"metadata"`
	ReportingController string            `json:"reportingController"`
	ReportingInstance   string            `json:"reportingInstance"`
}

// revision returns the revision from the metadata. Older notification-
// controllers strip the API group prefix before forwarding, newer ones keep
// it, so both spellings are accepted; the prefixed key wins.
func (e *event) revision() string {
	if g := e.InvolvedObject.group(); g != "" {
		if r, ok := e.Metadata[g+"/revision"]; ok {
			return r
		}
	}
	return e.Metadata["revision"]
}

// originRevision returns the revision of the origin the applied artifact was
// built from: kustomize-controller sends it as
// kustomize.toolkit.fluxcd.io/originRevision (kustomization_controller.go
// event, eventv1.MetaOriginRevisionKey), and notification-controller
// prefers it for commit statuses. Both spellings are accepted, as for
// revision.
func (e *event) originRevision() string {
	if g := e.InvolvedObject.group(); g != "" {
		if r, ok := e.Metadata[g+"/originRevision"]; ok {
			return r
		}
	}
	return e.Metadata["originRevision"]
}

// verifySignature checks an X-Signature value of the form <alg>=<hex HMAC of
// body>, as notification-controller's internal/notifier/forwarder.go sets
// it. The signature must match the HMAC under one of keys (see readKey).
func verifySignature(keys [][]byte, body []byte, header string) error {
	if header == "" {
		return reject(http.StatusUnauthorized, "missing %s header", signatureHeader)
	}
	alg, sum, ok := strings.Cut(header, "=")
	if !ok {
		return reject(http.StatusUnauthorized, "malformed %s header", signatureHeader)
	}
	newHash, ok := hashes[strings.ToLower(strings.TrimSpace(alg))]
	if !ok {
		return reject(http.StatusUnauthorized, "unsupported signature algorithm")
	}
	got, err := hex.DecodeString(strings.TrimSpace(sum))
	if err != nil {
		return reject(http.StatusUnauthorized, "signature is not hex")
	}
	// Every key is tried and compared in constant time, without stopping at
	// the first match, so the time taken does not tell which key matched
	// nor how much of the signature did.
	matched := false
	for _, key := range keys {
		mac := hmac.New(newHash, key)
		mac.Write(body)
		if hmac.Equal(got, mac.Sum(nil)) {
			matched = true
		}
	}
	if !matched {
		return reject(http.StatusUnauthorized, "signature mismatch")
	}
	return nil
}

// decodeEvent parses and validates one event body.
func decodeEvent(body []byte) (*event, error) {
	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, reject(http.StatusBadRequest, "malformed event: %v", err)
	}
	if e.InvolvedObject.Kind == "" || e.InvolvedObject.Name == "" {
		return nil, reject(http.StatusBadRequest, "involvedObject.kind and involvedObject.name are required")
	}
	if !severities[e.Severity] {
		return nil, reject(http.StatusBadRequest, "unknown severity %q", e.Severity)
	}
	for field, v := range map[string]string{
		"involvedObject.kind":      e.InvolvedObject.Kind,
		"involvedObject.namespace": e.InvolvedObject.Namespace,
		"involvedObject.name":      e.InvolvedObject.Name,
		"reason":                   e.Reason,
		"reportingController":      e.ReportingController,
		"revision":                 e.revision(),
	} {
		if len(v) > maxLabelBytes {
			return nil, reject(http.StatusBadRequest, "%s longer than %d bytes", field, maxLabelBytes)
		}
	}
	return &e, nil
}

// decodeRequest verifies the signature (when keys are set) and decodes the
// body. It is the pure part of ServeHTTP and the target of FuzzDecode.
func decodeRequest(keys [][]byte, body []byte, signature string) (*event, error) {
	if keys != nil {
		if err := verifySignature(keys, body, signature); err != nil {
			return nil, err
		}
	}
	return decodeEvent(body)
}
