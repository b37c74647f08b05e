package collector

import (
	"encoding/json"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flux-exporter/flux_exporter/internal/kube"
)

// FuzzDecodeObject feeds arbitrary JSON objects, as an API server with a
// looser or newer schema could serve them, through the informer transform
// and the emitter of every known kind and an unknown one. Neither may panic,
// and every emitted metric must be valid.
func FuzzDecodeObject(f *testing.F) {
	for _, seed := range []string{
		`{"metadata":{"name":"a","namespace":"b","uid":"c","generation":2},"spec":{"interval":"5m","suspend":true},"status":{"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`,
		`{"metadata":{"name":"x"},"spec":{"interval":7,"suspend":"yes","ref":"main"},"status":{"conditions":"bad","artifact":[],"history":{"0":1}}}`,
		`{"status":{"history":[null,{"chartVersion":1}],"conditions":[null,"x",{"type":5},{"type":"Ready"},{"type":"Ready"}],"inventory":{"entries":{}}}}`,
		`{"spec":{"ref":{"branch":["x"]},"chartRef":{"name":{}},"update":{"path":null}},"status":{"latestRef":{"name":"img","tag":1,"digest":"sha256:0"},"lastScanResult":{"tagCount":"many","scanTime":"later"}}}`,
	} {
		f.Add(seed)
	}
	kindNames := []string{"Unknown"}
	for k := range kinds {
		kindNames = append(kindNames, k)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var obj map[string]any
		if json.Unmarshal([]byte(doc), &obj) != nil {
			return
		}
		for _, k := range kindNames {
			u := &unstructured.Unstructured{Object: obj}
			rec, _ := NewDecoder(everyFamily()).Decode(kube.Kind{Kind: k}, u, nil)
			if rec == nil {
				t.Fatal("Decode returned no record")
			}
			// The oracle parses the rendered bytes: they must parse, and
			// each metric must be valid.
			ms, err := rec.metrics()
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			for _, m := range ms {
				var out dto.Metric
				if err := m.Write(&out); err != nil {
					t.Fatalf("invalid metric for %s: %v", k, err)
				}
			}
			// The fast path writes what client_golang's encoders write.
			for _, f := range exportedFormats {
				if err := sameAsClientGolang([]*Record{rec}, f); err != nil {
					t.Fatalf("%s: %v", k, err)
				}
			}
		}
	})
}
