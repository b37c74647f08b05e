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
	// mounted Secret can be rotated without a restart. A signature made
	// with the file's exact bytes is accepted, and so is one made with them
	// trimmed of surrounding white space (see readKey for why both).
	HMACKeyFile string
	// AllowUnsigned must be set to run without HMACKeyFile; any sender that
	// can reach the endpoint can then write events.
	AllowUnsigned bool
	// MaxBodyBytes caps the request body (default 1 MiB).
	MaxBodyBytes int64
	// SeriesTTL is how long the series of an object are kept once Exists
	// reports it deleted, or, for an object Exists does not watch, after
	// the last event received for it (default 1h).
	SeriesTTL time.Duration
	// MaxSeries caps the number of per-object series held (default 10000).
	MaxSeries int
	// Exists reports what the informer cache knows of an object. watched is
	// false when the cache cannot know, because the object's namespace or
	// kind is not watched; its series then expire SeriesTTL after the last
	// event received for it. When watched, exists reports whether the cache
	// holds the object, and must be true while the cache has not synced,
	// since a half-filled cache cannot prove a deletion. Nil means every
	// object exists and series never expire.
	Exists func(kind, namespace, name string) (exists, watched bool)
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
	exists       func(kind, namespace, name string) (exists, watched bool)

	// Overridden by tests to drive the TTL and key reload deterministically.
	now             func() time.Time
	keyPollInterval time.Duration
	sweepInterval   time.Duration

	keyMu sync.RWMutex
	keys  [][]byte // from readKey; nil when unsigned requests are allowed

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
		keys, err := readKey(r.keyFile)
		if err != nil {
			return nil, err
		}
		r.keys = keys
	case cfg.AllowUnsigned:
		// Said here once; main says nothing more of it.
		r.log.Warn("Events endpoint accepts unsigned events: anyone who can reach it can write event metrics; set --events.hmac-key-file to require generic-hmac signatures")
	default:
		return nil, errors.New("events: an HMAC key file is required unless unsigned requests are allowed explicitly")
	}
	return r, nil
}

// readKey returns the keys a valid signature may be made with: the file's
// exact bytes first, then, when they differ, the same trimmed of surrounding
// white space. Both are needed because notification-controller changed how
// it reads the Secret's token. v1.3 to v1.6 trimmed it (strings.TrimSpace in
// internal/server/event_handlers.go); v1.0 to v1.2, and v1.7 on, sign with
// the token exactly as stored. Since v1.7, fluxcd/pkg
// runtime/secrets/converter.go TokenAuthFromSecret returns the Secret's bytes
// untouched, and internal/notifier/factory.go hands them to NewForwarder,
// which computes X-Signature in internal/notifier/forwarder.go. A Secret made
// with `echo token | base64` keeps its newline, kubelet mounts it byte for
// byte, and trimming here alone would answer every event of a current
// release 401.
func readKey(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("events: reading HMAC key file: %w", err)
	}
	return keyCandidates(path, b)
}

func keyCandidates(path string, b []byte) ([][]byte, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("events: HMAC key file %s is empty", path)
	}
	if len(trimmed) == len(b) {
		return [][]byte{b}, nil
	}
	return [][]byte{b, trimmed}, nil
}

// reloadKey re-reads the key file. Comparing the content rather than the
// modification time also catches kubelet's atomic symlink swap, which leaves
// the link's own metadata untouched. A failed read keeps the old key.
func (r *Receiver) reloadKey() {
	keys, err := readKey(r.keyFile)
	if err != nil {
		r.log.Warn("Keeping the previous HMAC key", "file", r.keyFile, "err", err)
		return
	}
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	// keys[0] is the file's exact content, so this also sees a change in
	// white space only.
	if len(r.keys) == 0 || !bytes.Equal(keys[0], r.keys[0]) {
		r.keys = keys
		r.log.Info("Reloaded the HMAC key for the Flux events webhook", "file", r.keyFile)
	}
}

// MaxBodyBytes is the largest body ServeHTTP reads, so that the server in
// front can give a slow sender the time to upload it.
func (r *Receiver) MaxBodyBytes() int64 { return r.maxBodyBytes }

func (r *Receiver) currentKeys() [][]byte {
	r.keyMu.RLock()
	defer r.keyMu.RUnlock()
	return r.keys
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

	e, err := decodeRequest(r.currentKeys(), body, req.Header.Get(signatureHeader))
	if err != nil {
		return err
	}
	// The body names the controller; the header is only a fallback for
	// senders that leave reportingController empty.
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
