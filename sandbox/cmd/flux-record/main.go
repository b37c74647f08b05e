// Command flux-record records timelines from the real Flux controllers:
// it starts an in-process API server with the Flux CRDs, a Git server
// (git http-backend) and a Helm repository on 127.0.0.1, runs
// source-controller, kustomize-controller and helm-controller against
// them, plays each scenario's actions (a bad commit, a fixed commit, a
// failing upgrade, ...) and writes every state the controllers stored to
// a fixture that the e2e timelines replay (package recorded).
//
// Usage (make record-timelines does this):
//
//	flux-record -out e2e/testdata/recorded [-scenario NAME]
//
// The controllers are looked up in PATH (make .bin/<controller> builds
// them). Intervals and retry delays are 1/60 of Flux's defaults, so that
// a fixture replayed at scale 60 is the timeline at Flux's own pace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	out := flag.String("out", filepath.Join("e2e", "testdata", "recorded"), "directory the fixtures are written to")
	only := flag.String("scenario", "", "record only this scenario (default: all)")
	verbose := flag.Bool("v", false, "log the controllers' output when a scenario fails")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *only != "" && !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == *only }) {
		logger.Error("unknown scenario: pass one of the names in cmd/flux-record/scenarios.go", "scenario", *only)
		return 2
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		logger.Error("cannot create the output directory", "dir", *out, "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := record(ctx, logger, *out, *only, *verbose); err != nil {
		logger.Error("recording failed", "err", err)
		return 1
	}
	return 0
}

// record brings up the world once and plays every scenario in a
// namespace of its own.
func record(ctx context.Context, logger *slog.Logger, out, only string, verbose bool) (err error) {
	w, err := startWorld(ctx, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, w.stop(verbose && err != nil)) }()
	for _, s := range scenarios {
		if only != "" && s.name != only {
			continue
		}
		start := time.Now()
		logger.Info("recording", "scenario", s.name)
		f, err := w.play(ctx, s)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s.name, err)
		}
		path := filepath.Join(out, s.name+".yaml")
		if err := f.Write(path); err != nil {
			return err
		}
		logger.Info("recorded", "scenario", s.name, "states", len(f.States), "file", path, "took", time.Since(start).Round(time.Second))
	}
	return nil
}
