package apiserver

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdReadyTimeout bounds the wait for the embedded etcd to elect itself leader.
const etcdReadyTimeout = 60 * time.Second

// startEtcd runs a single-member etcd under dir. Client and peer listeners
// bind 127.0.0.1 port 0, so the kernel picks free ports without a
// probe-then-bind race; the real client address is read back from the listener.
func startEtcd(ctx context.Context, dir string, verbose bool) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Name = "flux-sandbox"
	cfg.Dir = filepath.Join(dir, "etcd")
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.AdvertiseClientUrls = []url.URL{loopback}
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.AdvertisePeerUrls = []url.URL{loopback}
	// A single member never dials its peer URL, so the unresolved :0 is harmless here.
	cfg.InitialCluster = cfg.Name + "=" + loopback.String()
	// Data is thrown away on Stop; fsync only costs time.
	cfg.UnsafeNoFsync = true
	if verbose {
		cfg.LogLevel = "warn"
	} else {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start embedded etcd: %w", err)
	}
	timer := time.NewTimer(etcdReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, "", fmt.Errorf("embedded etcd not ready after %s", etcdReadyTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, "", fmt.Errorf("waiting for embedded etcd: %w", ctx.Err())
	}
	if len(e.Clients) == 0 {
		e.Close()
		return nil, "", fmt.Errorf("embedded etcd has no client listener")
	}
	return e, "http://" + e.Clients[0].Addr().String(), nil
}
