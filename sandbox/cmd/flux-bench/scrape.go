package main

// Scraping an exporter as Prometheus does, gzip or plain, one at a time
// and concurrently, and checking that the answer is complete.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// sequentialScrapes times cfg.scrapes complete scrapes with gzip, then as
// many without, into res.
func sequentialScrapes(ctx context.Context, cfg *config, t *target, s *scraper, res *result) error {
	for _, gz := range []bool{true, false} {
		for range cfg.scrapes {
			sc, err := s.scrape(ctx, gz)
			if err != nil {
				return err
			}
			if err := checkComplete(sc, t, cfg.objects); err != nil {
				return err
			}
			if gz {
				res.gzip = append(res.gzip, sc.took)
				res.gzipBytes = len(sc.body)
				res.gzipEncoding = sc.encoding
			} else {
				res.plain = append(res.plain, sc.took)
				res.plainBytes = len(sc.body)
			}
		}
	}
	return nil
}

// waitComplete scrapes back to back until every object is in the answer and
// records the time since the process started.
func waitComplete(ctx context.Context, cfg *config, t *target, p *proc, s *scraper, res *result) (string, error) {
	deadline := time.Now().Add(cfg.readyTimeout)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return "", fmt.Errorf("exited before serving a complete scrape (%v); its log ends:\n%s", p.waitErr, p.log.tail())
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		url := p.metricsURL(t)
		if url == "" {
			continue
		}
		s.url = url
		sc, err := s.scrape(ctx, true)
		if err != nil {
			last = err.Error()
			continue
		}
		plain, err := decode(sc.body, sc.encoding)
		if err != nil {
			return "", err
		}
		total, info := countSamples(plain, t.infoSuffix)
		switch {
		case info == cfg.objects:
			res.startup = sc.end.Sub(p.started)
			res.samples = total
			res.contentType = sc.contentType
			if cfg.saveScrapes != "" {
				path := filepath.Join(cfg.saveScrapes, t.name+".txt")
				if err := os.MkdirAll(cfg.saveScrapes, 0o755); err != nil {
					return "", fmt.Errorf("save the scrape: %w", err)
				}
				if err := os.WriteFile(path, plain, 0o644); err != nil {
					return "", fmt.Errorf("save the scrape: %w", err)
				}
			}
			return url, nil
		case info > cfg.objects:
			return "", fmt.Errorf("%d series in families ending in %s for %d objects: the exporter or its config reports an object twice", info, t.infoSuffix, cfg.objects)
		}
		last = fmt.Sprintf("%d of %d objects", info, cfg.objects)
	}
	return "", fmt.Errorf("no complete scrape within %s (last: %s); its log ends:\n%s", cfg.readyTimeout, last, p.log.tail())
}

// checkComplete fails on an answer that is not a full scrape of the fleet.
func checkComplete(sc *scrape, t *target, objects int) error {
	plain, err := decode(sc.body, sc.encoding)
	if err != nil {
		return err
	}
	if _, info := countSamples(plain, t.infoSuffix); info != objects {
		return fmt.Errorf("incomplete scrape: %d of %d objects", info, objects)
	}
	return nil
}

// concurrentRound starts cfg.concurrent scrapes at once, as several
// Prometheus servers (an HA pair, a federation, an agent) would, and returns
// the wall time until the last one has been read.
func concurrentRound(ctx context.Context, s *scraper, t *target, cfg *config) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, cfg.concurrent)
	gate := make(chan struct{})
	for i := range cfg.concurrent {
		wg.Go(func() {
			<-gate
			sc, err := s.scrape(ctx, true)
			if err == nil {
				err = checkComplete(sc, t, cfg.objects)
			}
			errs[i] = err
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("concurrent round: %w", err)
	}
	return time.Since(start), nil
}

// scraper sends the requests a Prometheus would send.
type scraper struct {
	client  *http.Client
	url     string
	timeout time.Duration
}

type scrape struct {
	body        []byte // as received, compressed or not
	encoding    string
	contentType string
	took        time.Duration // request sent to body read
	end         time.Time
}

func (s *scraper) scrape(ctx context.Context, gz bool) (*scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape request: %w", err)
	}
	req.Header.Set("Accept", promAccept)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	req.Header.Set("User-Agent", "flux-bench")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(s.timeout.Seconds(), 'f', -1, 64))
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	end := time.Now()
	if err != nil {
		return nil, fmt.Errorf("read scrape of %s: %w", s.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s: %.200s", s.url, resp.Status, body)
	}
	return &scrape{body: body, encoding: resp.Header.Get("Content-Encoding"),
		contentType: resp.Header.Get("Content-Type"), took: end.Sub(start), end: end}, nil
}
