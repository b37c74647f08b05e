package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// gitServer serves one repository, fleet.git, over smart HTTP with git's
// own http-backend (go-git in source-controller needs smart HTTP), and
// commits to it from a work tree beside it.
type gitServer struct {
	dir  string // holds fleet.git and the work tree
	url  string // http://127.0.0.1:P/fleet.git
	http *http.Server
}

func startGit(ctx context.Context, dir string) (*gitServer, error) {
	backend, err := gitHTTPBackend(ctx)
	if err != nil {
		return nil, err
	}
	g := &gitServer{dir: dir}
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", filepath.Join(dir, "fleet.git")},
		{"init", "--quiet", "--initial-branch=main", filepath.Join(dir, "work")},
	} {
		if err := g.git(ctx, dir, args...); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("git server: %w", err)
	}
	g.url = "http://" + ln.Addr().String() + "/fleet.git"
	g.http = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + dir, "GIT_HTTP_EXPORT_ALL=1"},
	}}
	go func() { _ = g.http.Serve(ln) }()
	return g, nil
}

// gitHTTPBackend finds git's CGI program.
func gitHTTPBackend(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("git not found (install Debian's git package): %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("git http-backend not found: %w", err)
	}
	return p, nil
}

// commit replaces the work tree's files with files, commits and pushes,
// and returns the revision as source-controller writes it.
func (g *gitServer) commit(ctx context.Context, message string, files map[string]string) (string, error) {
	work := filepath.Join(g.dir, "work")
	if err := g.git(ctx, work, "rm", "-r", "--quiet", "--ignore-unmatch", "."); err != nil {
		return "", err
	}
	for name, content := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("work tree: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("work tree: %w", err)
		}
	}
	for _, args := range [][]string{
		{"add", "--all"},
		{"commit", "--quiet", "--allow-empty", "-m", message},
		{"push", "--quiet", filepath.Join(g.dir, "fleet.git"), "main"},
	} {
		if err := g.git(ctx, work, args...); err != nil {
			return "", err
		}
	}
	out, err := exec.CommandContext(ctx, "git", "-C", work, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", fmt.Errorf("git rev-parse: %w", err)
	}
	return "main@sha1:" + strings.TrimSpace(string(out)), nil
}

func (g *gitServer) git(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	// A fixed date makes a commit's hash depend on its content alone, so a
	// re-recording names the same revisions and the timelines' expected
	// revision labels stay true.
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=flux-record", "GIT_AUTHOR_EMAIL=flux-record@127.0.0.1",
		"GIT_COMMITTER_NAME=flux-record", "GIT_COMMITTER_EMAIL=flux-record@127.0.0.1",
		"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("git directory: %w", err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (g *gitServer) close() error {
	if err := g.http.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("git server: %w", err)
	}
	return nil
}
