// Package events receives Flux events from notification-controller's generic
// and generic-hmac providers over HTTP and exports them as metrics.
package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Path is where a Flux Provider of type generic or generic-hmac posts events.
const Path = "/api/v1/events"

const (
	defaultMaxBodyBytes = 1 << 20
	defaultSeriesTTL    = time.Hour
	defaultMaxSeries    = 10000
	defaultKeyPoll      = time.Second
)

// Config configures a Receiver. Zero values get the documented defaults.
type Config struct {
	// HMACKeyFile holds the Provider Secret's token. Run re-reads it, so a
	// mounted Secret can be rotated without a restart. Surrounding white
	// space is ignored, as notification-controller ignores it.
	HMACKeyFile string
	// AllowUnsigned must be set to run without HMACKeyFile; any sender that
	// can reach the endpoint can then write events.
	AllowUnsigned bool
	// MaxBodyBytes caps the request body (default 1 MiB).
	MaxBodyBytes int64
	// SeriesTTL is how long an object may be missing before its series are
	// dropped (default 1h).
	SeriesTTL time.Duration
	// MaxSeries caps the number of per-object series held (default 10000).
	MaxSeries int
	// Exists reports whether an object is still present, normally from the
	// informer cache. It must answer true for kinds it does not track. Nil
	// means every object exists and series never expire.
	Exists func(kind, namespace, name string) bool
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Receiver is the webhook handler and the prometheus.Collector of the
// metrics it derives from events.
type Receiver struct {
	log          *slog.Logger
	keyFile      string
	maxBodyBytes int64
	ttl          time.Duration
	maxSeries    int
	exists       func(kind, namespace, name string) bool

	// Overridden by tests to drive the TTL and key reload deterministically.
	now             func() time.Time
	keyPollInterval time.Duration
	sweepInterval   time.Duration

	keyMu sync.RWMutex
	key   []byte // nil when unsigned requests are allowed

	mu       sync.Mutex
	objects  map[objectKey]*objectState
	series   int
	requests map[int]float64
	dropped  map[string]float64
}

var _ prometheus.Collector = (*Receiver)(nil)
var _ http.Handler = (*Receiver)(nil)

// New validates cfg and returns a Receiver. It fails when neither a key file
// nor AllowUnsigned is given, or when the key file cannot be read or is empty.
func New(cfg Config) (*Receiver, error) {
	r := &Receiver{
		log:             cfg.Logger,
		keyFile:         cfg.HMACKeyFile,
		maxBodyBytes:    cfg.MaxBodyBytes,
		ttl:             cfg.SeriesTTL,
		maxSeries:       cfg.MaxSeries,
		exists:          cfg.Exists,
		now:             time.Now,
		keyPollInterval: defaultKeyPoll,
		objects:         map[objectKey]*objectState{},
		requests:        map[int]float64{},
		dropped:         map[string]float64{causeMaxSeries: 0},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.maxBodyBytes <= 0 {
		r.maxBodyBytes = defaultMaxBodyBytes
	}
	if r.ttl <= 0 {
		r.ttl = defaultSeriesTTL
	}
	if r.maxSeries <= 0 {
		r.maxSeries = defaultMaxSeries
	}
	// Sweep often enough that a series outlives its object by at most about
	// half the TTL again, but not more than once a minute nor every instant.
	r.sweepInterval = min(max(r.ttl/4, 100*time.Millisecond), time.Minute)
	for _, c := range knownCodes {
		r.requests[c] = 0
	}

	switch {
	case r.keyFile != "":
		key, err := readKey(r.keyFile)
		if err != nil {
			return nil, err
		}
		r.key = key
	case cfg.AllowUnsigned:
		r.log.Warn("Flux events webhook accepts unsigned requests; anyone who can reach it can write event metrics. Set an HMAC key file to require generic-hmac signatures.")
	default:
		return nil, errors.New("events: an HMAC key file is required unless unsigned requests are allowed explicitly")
	}
	return r, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("events: reading HMAC key file: %w", err)
	}
	key := bytes.TrimSpace(b)
	if len(key) == 0 {
		return nil, fmt.Errorf("events: HMAC key file %s is empty", path)
	}
	return key, nil
}

// reloadKey re-reads the key file. Comparing the content rather than the
// modification time also catches kubelet's atomic symlink swap, which leaves
// the link's own metadata untouched. A failed read keeps the old key.
func (r *Receiver) reloadKey() {
	key, err := readKey(r.keyFile)
	if err != nil {
		r.log.Warn("Keeping the previous HMAC key", "file", r.keyFile, "err", err)
		return
	}
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	if !bytes.Equal(key, r.key) {
		r.key = key
		r.log.Info("Reloaded the HMAC key for the Flux events webhook", "file", r.keyFile)
	}
}

func (r *Receiver) currentKey() []byte {
	r.keyMu.RLock()
	defer r.keyMu.RUnlock()
	return r.key
}

// Run sweeps expired series and reloads the key file until ctx is done.
func (r *Receiver) Run(ctx context.Context) {
	sweep := time.NewTicker(r.sweepInterval)
	defer sweep.Stop()
	var reload <-chan time.Time
	if r.keyFile != "" {
		t := time.NewTicker(r.keyPollInterval)
		defer t.Stop()
		reload = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			r.sweep()
		case <-reload:
			r.reloadKey()
		}
	}
}

// ServeHTTP handles one event. It is recorded before the answer is written,
// so a 202 means the event is already reflected in the metrics.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	err := r.handle(w, req)
	code := statusOf(err)

	r.mu.Lock()
	r.requests[code]++
	r.mu.Unlock()

	if err != nil {
		r.log.Debug("Rejected Flux event", "code", code, "remote", req.RemoteAddr, "err", err)
		http.Error(w, err.Error(), code)
		return
	}
	w.WriteHeader(code)
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) error {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return reject(http.StatusMethodNotAllowed, "only POST is allowed")
	}
	if !isJSON(req.Header.Get("Content-Type")) {
		return reject(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	if req.ContentLength > r.maxBodyBytes {
		return reject(http.StatusRequestEntityTooLarge, "body larger than %d bytes", r.maxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return reject(http.StatusRequestEntityTooLarge, "body larger than %d bytes", r.maxBodyBytes)
		}
		return reject(http.StatusBadRequest, "reading body: %v", err)
	}

	e, err := decodeRequest(r.currentKey(), body, req.Header.Get(signatureHeader))
	if err != nil {
		return err
	}
	controller := e.ReportingController
	if controller == "" {
		controller = strings.ToValidUTF8(req.Header.Get(componentHeader), "\uFFFD")
		if len(controller) > maxLabelBytes {
			return reject(http.StatusBadRequest, "%s header longer than %d bytes", componentHeader, maxLabelBytes)
		}
	}

	received := r.now()
	r.mu.Lock()
	r.record(e, controller, received)
	r.mu.Unlock()
	return nil
}

// isJSON accepts application/json and structured +json types, with
// parameters such as charset.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}
