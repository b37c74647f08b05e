package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const kubectl = "/usr/bin/kubectl"

// syncBuffer collects output written by the sandbox goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.objects != 200 || c.namespaces != 5 || c.churnInterval != 3*time.Second || c.mode != "crd" || c.listen != "127.0.0.1:16443" {
		t.Errorf("defaults: %+v", c)
	}
	for _, args := range [][]string{
		{"--listen", "0.0.0.0:16443"},
		{"--listen", "localhost:16443"},
		{"--listen", "127.0.0.1"},
		{"--listen", "127.0.0.1:99999"},
		{"--mode", "kind"},
		{"--objects", "0"},
		{"--churn-interval", "-1s"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"--listen", "0.0.0.0:1"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "only host 127.0.0.1") {
		t.Errorf("run with a public listen address: exit %d, stderr %q", code, stderr.String())
	}
}

// TestSandbox runs the command until it is ready, lists the fleet with
// kubectl through the kubeconfig it wrote, then stops it and checks it left
// nothing behind.
func TestSandbox(t *testing.T) {
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl is needed at %s (install kubectl v1.32): %v", kubectl, err)
	}
	// Everything the sandbox puts in the temporary directory lands here.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	out := t.TempDir()
	kubeconfig := filepath.Join(out, "kubeconfig")
	ready := filepath.Join(out, "ready")

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	var code int
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		code = run(ctx, []string{
			"--objects", "60", "--namespaces", "3", "--seed", "9", "--churn-interval", "200ms",
			"--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfig, "--ready-file", ready,
		}, &stdout, &stderr)
	}()
	// However the test ends, the server stops before its directories go.
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Error("sandbox still running 60s after cancel")
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("sandbox exited with %d before it was ready\nstderr:\n%s", code, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 2 minutes\nstderr:\n%s", stderr.String())
		}
	}
	if b, err := os.ReadFile(ready); err != nil || strings.TrimSpace(string(b)) != kubeconfig {
		t.Errorf("ready file holds %q (%v), want the kubeconfig path", b, err)
	}
	for _, want := range []string{kubeconfig, "kubectl --kubeconfig " + kubeconfig + " get gitrepositories,kustomizations,helmreleases -A"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage does not mention %q:\n%s", want, stdout.String())
		}
	}

	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "get", "gitrepositories,kustomizations,helmreleases", "-A")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // keep kubectl's cache out of TMPDIR and $HOME
	listing, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, listing)
	}
	checkListing(t, string(listing))

	cancel()
	select {
	case <-exited:
		if code != 0 {
			t.Errorf("sandbox exited with %d\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sandbox did not stop within 60s of cancel")
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in TMPDIR: %s", e.Name())
	}
	for _, p := range []string{kubeconfig, ready} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after exit (%v)", p, err)
		}
	}
}

// checkListing reads kubectl's tables (one per kind) by their header
// columns and expects the Ready and Status columns filled for the objects a
// controller has reconciled.
func checkListing(t *testing.T, listing string) {
	t.Helper()
	kinds := map[string]int{}
	var rows, filled int
	var readyAt, statusAt int
	for _, line := range strings.Split(listing, "\n") {
		if strings.HasPrefix(line, "NAMESPACE") {
			readyAt, statusAt = strings.Index(line, "READY"), strings.Index(line, "STATUS")
			if readyAt < 0 || statusAt < readyAt {
				t.Fatalf("header without READY and STATUS: %q", line)
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		kind := fields[1][:strings.Index(fields[1], "/")]
		kinds[kind]++
		rows++
		if len(line) <= statusAt {
			continue // never reconciled: both columns empty
		}
		ready := strings.TrimSpace(line[readyAt:statusAt])
		status := strings.TrimSpace(line[statusAt:])
		switch ready {
		case "":
			if status != "" {
				t.Errorf("Status without Ready: %q", line)
			}
		case "True", "False", "Unknown":
			if status == "" {
				t.Errorf("Ready %s without a Status message: %q", ready, line)
			}
			filled++
		default:
			t.Errorf("unexpected Ready column %q in %q", ready, line)
		}
	}
	for _, k := range []string{"gitrepository.source.toolkit.fluxcd.io", "kustomization.kustomize.toolkit.fluxcd.io", "helmrelease.helm.toolkit.fluxcd.io"} {
		if kinds[k] == 0 {
			t.Errorf("kubectl listed no %s:\n%s", k, listing)
		}
	}
	if rows == 0 || filled*10 < rows*8 {
		t.Errorf("%d of %d rows have Ready and Status filled, want at least 80%%:\n%s", filled, rows, listing)
	}
}
