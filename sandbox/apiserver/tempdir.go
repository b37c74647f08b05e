package apiserver

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	tempPrefix = "flux-sandbox-apiserver-"
	ownerFile  = "owner.pid"
)

var sweepOnce sync.Once

// makeTempDir creates a server's directory and records the owning process,
// so that a later process can remove what a killed one left behind: the
// embedded etcd preallocates over 100 MB of WAL.
func makeTempDir() (string, error) {
	sweepOnce.Do(sweepStale)
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return "", fmt.Errorf("create temporary directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("record owner of %s: %w", dir, err)
	}
	return dir, nil
}

// sweepStale removes server directories whose owning process has exited.
// Directories without an owner record are left alone.
func sweepStale() {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	if err != nil {
		return
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			slog.Warn("Cannot remove stale API server directory", "dir", dir, "pid", pid, "err", err)
			continue
		}
		slog.Info("Removed API server directory left by an exited process", "dir", dir, "pid", pid)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
