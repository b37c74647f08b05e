package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

// chartRepo is a Helm repository served by a plain file server: an
// index.yaml and one .tgz per version of the chart "demo". Its templates
// hold ConfigMaps only, which Helm installs without a kubelet.
type chartRepo struct {
	url  string
	http *http.Server
}

// demoVersions are the chart versions the repository holds. 2.0.0 also
// writes a ConfigMap into .Values.extraNamespace, which does not exist
// unless a scenario creates it: an upgrade to 2.0.0 fails while it is
// missing, as an upgrade fails on any object the API server refuses.
var demoVersions = []string{"1.0.0", "1.1.0", "2.0.0"}

func startCharts(dir string) (*chartRepo, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chart repository: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chart repository: %w", err)
	}
	r := &chartRepo{url: "http://" + ln.Addr().String()}
	var entries []map[string]any
	for _, v := range demoVersions {
		tgz, err := demoChart(v)
		if err != nil {
			return nil, err
		}
		name := "demo-" + v + ".tgz"
		if err := os.WriteFile(filepath.Join(dir, name), tgz, 0o644); err != nil {
			return nil, fmt.Errorf("chart repository: %w", err)
		}
		entries = append(entries, map[string]any{
			"apiVersion": "v2", "name": "demo", "version": v, "appVersion": v,
			"urls": []string{r.url + "/" + name}, "digest": fmt.Sprintf("%x", sha256.Sum256(tgz)),
			"created": time.Now().UTC().Format(time.RFC3339),
		})
	}
	index, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "entries": map[string]any{"demo": entries},
		"generated": time.Now().UTC().Format(time.RFC3339)})
	if err != nil {
		return nil, fmt.Errorf("chart index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.yaml"), index, 0o644); err != nil {
		return nil, fmt.Errorf("chart repository: %w", err)
	}
	r.http = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.FileServer(http.Dir(dir))}
	go func() { _ = r.http.Serve(ln) }()
	return r, nil
}

// demoChart packages version v of the chart as helm package does: a
// gzipped tar with everything under demo/.
func demoChart(v string) ([]byte, error) {
	files := []struct{ name, body string }{
		{"demo/Chart.yaml", fmt.Sprintf("apiVersion: v2\nname: demo\nversion: %s\nappVersion: %q\n", v, v)},
		{"demo/values.yaml", "extraNamespace: missing\n"},
		{"demo/templates/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  version: " + v + "\n"},
	}
	if v == "2.0.0" {
		files = append(files, struct{ name, body string }{"demo/templates/extra.yaml",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\n  namespace: {{ .Values.extraNamespace }}\ndata:\n  version: " + v + "\n"})
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Now()}); err != nil {
			return nil, fmt.Errorf("chart %s: %w", v, err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			return nil, fmt.Errorf("chart %s: %w", v, err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return nil, fmt.Errorf("chart %s: %w", v, err)
	}
	return buf.Bytes(), nil
}

func (r *chartRepo) close() error {
	if err := r.http.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("chart repository: %w", err)
	}
	return nil
}
