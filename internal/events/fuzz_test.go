package events

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bodies and X-Signature values through the
// verification and decoding, and through the whole handler. Besides not
// panicking, an accepted request must really be correctly signed and a valid
// event, and the handler must stay within its status codes and series cap.
func FuzzDecode(f *testing.F) {
	// A key file with a trailing newline: both the exact and the trimmed key
	// are valid, and either may sign.
	stored := []byte(testKey + "\n")
	keys, err := keyCandidates("fuzz", stored)
	if err != nil {
		f.Fatal(err)
	}
	key := []byte(testKey)
	ts := time.Date(2024, 5, 1, 9, 0, 0, 0, time.UTC)
	seeds := [][]byte{
		mustMarshal(f, kustomizationEvent("webapp", "info", "ReconciliationSucceeded", ts,
			map[string]string{"kustomize.toolkit.fluxcd.io/revision": "main@sha1:aaaa"})),
		mustMarshal(f, kustomizationEvent("webapp", "error", "HealthCheckFailed", time.Time{},
			map[string]string{"revision": "main@sha1:bbbb"})),
		[]byte(`{"involvedObject":{"kind":"K","name":"n"},"severity":"trace","timestamp":null}`),
		[]byte(`{"involvedObject":{"kind":"K","name":"n","apiVersion":"v1"},"severity":"info","metadata":{"/revision":"x"}}`),
		[]byte(`{"involvedObject":{"kind":"K"},"severity":"info"}`),
		[]byte(`{"involvedObject":{"kind":"K","name":"n"},"severity":"info","timestamp":"2024-13-01T00:00:00Z"}`),
		[]byte(`{"involvedObject":{"kind":"K","name":"n"},"severity":"info","metadata":{"revision":1}}`),
		[]byte(`{"involvedObject":`),
		[]byte(`null`),
		[]byte(``),
		[]byte("{\"involvedObject\":{\"kind\":\"\xff\",\"name\":\"n\"},\"severity\":\"info\"}"),
	}
	for i, body := range seeds {
		alg := []string{"sha224", "sha256", "sha384", "sha512"}[i%4]
		f.Add(body, sign(alg, key, body), uint8(i))
		f.Add(body, sign(alg, []byte("wrong"), body), uint8(i))
	}
	f.Add(seeds[0], sign("sha256", stored, seeds[0]), uint8(0x81))
	f.Add(seeds[0], sign("sha256", []byte(testKey+"\n\n"), seeds[0]), uint8(0x82))
	f.Add(seeds[0], "", uint8(0))
	f.Add(seeds[0], "md5=00", uint8(1))
	f.Add(seeds[0], "sha256=", uint8(2))
	f.Add(seeds[0], "=", uint8(3))
	f.Add(seeds[0], "SHA256= "+strings.Repeat("0", 64), uint8(4))

	algs := []string{"sha224", "sha256", "sha384", "sha512"}
	f.Fuzz(func(t *testing.T, body []byte, signature string, pick uint8) {
		e, err := decodeRequest(keys, body, signature)
		if err == nil {
			if !independentlyVerified(key, body, signature) && !independentlyVerified(stored, body, signature) {
				t.Fatalf("accepted signature %q that does not verify", signature)
			}
			checkEvent(t, e)
		} else if code := statusOf(err); code != http.StatusBadRequest && code != http.StatusUnauthorized {
			t.Fatalf("decode error %v maps to %d", err, code)
		}

		// With a correct signature only the body decides.
		signer := key
		if pick&0x80 != 0 {
			signer = stored
		}
		good := sign(algs[int(pick)%len(algs)], signer, body)
		_, signedErr := decodeRequest(keys, body, good)
		_, unsignedErr := decodeRequest(nil, body, "")
		if statusOf(signedErr) == http.StatusUnauthorized {
			t.Fatalf("correct signature %q rejected: %v", good, signedErr)
		}
		if (signedErr == nil) != (unsignedErr == nil) {
			t.Fatalf("signed and unsigned decoding disagree: %v vs %v", signedErr, unsignedErr)
		}

		r, newErr := New(Config{AllowUnsigned: true, MaxSeries: 4, MaxBodyBytes: 1 << 16})
		if newErr != nil {
			t.Fatal(newErr)
		}
		r.keys = keys
		for _, sig := range []string{signature, good} {
			req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Gotk-Component", signature)
			req.Header.Set("X-Signature", sig)
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusAccepted, http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("unexpected status %d", rec.Code)
			}
		}
		r.mu.Lock()
		series := r.series
		r.mu.Unlock()
		if series > 4 {
			t.Fatalf("series %d above the cap", series)
		}
	})
}

// independentlyVerified re-checks a signature without the production table.
func independentlyVerified(key, body []byte, signature string) bool {
	alg, sum, ok := strings.Cut(signature, "=")
	if !ok {
		return false
	}
	newHash, ok := testHashes[strings.ToLower(strings.TrimSpace(alg))]
	if !ok {
		return false
	}
	got, err := hex.DecodeString(strings.TrimSpace(sum))
	if err != nil {
		return false
	}
	mac := hmac.New(newHash, key)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

func checkEvent(t *testing.T, e *event) {
	t.Helper()
	if e.InvolvedObject.Kind == "" || e.InvolvedObject.Name == "" {
		t.Fatalf("accepted event without kind or name: %+v", e.InvolvedObject)
	}
	if e.Severity != "trace" && e.Severity != "info" && e.Severity != "error" {
		t.Fatalf("accepted severity %q", e.Severity)
	}
	for _, v := range []string{e.InvolvedObject.Kind, e.InvolvedObject.Namespace, e.InvolvedObject.Name, e.Reason, e.ReportingController, e.revision()} {
		if len(v) > maxLabelBytes {
			t.Fatalf("accepted a label value of %d bytes", len(v))
		}
	}
}
