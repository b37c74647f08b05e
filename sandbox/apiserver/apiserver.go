// Package apiserver runs a real Kubernetes API server inside the Go process,
// backed by an embedded etcd, for tests and the sandbox.
//
// ModeCRD serves CustomResourceDefinitions and custom resources only
// (k8s.io/apiextensions-apiserver; every request is allowed).
// ModeFull runs kube-apiserver's own code path with client certificate and
// service account authentication and Node,RBAC authorisation.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Mode selects which API server Start runs.
type Mode string

const (
	// ModeCRD serves CRDs and custom resources; fast to start.
	ModeCRD Mode = "crd"
	// ModeFull serves everything kube-apiserver serves, with RBAC.
	ModeFull Mode = "full"
)

// DefaultListen binds the loopback address on a port the kernel picks.
const DefaultListen = "127.0.0.1:0"

const (
	// readyTimeout bounds the wait for /readyz; a cold full-mode start under
	// -race on two busy cores takes well over ten seconds.
	readyTimeout = 2 * time.Minute
	// probeTimeout bounds each readiness probe.
	probeTimeout = 5 * time.Second
	// stopTimeout bounds the graceful shutdown of the API server in Stop.
	stopTimeout = 30 * time.Second
	// watchDrainPeriod is how long shutdown may take to end open watches.
	// Without it, one open watch (any informer) holds the HTTP server's
	// shutdown for its full 60 s timeout.
	watchDrainPeriod = 5 * time.Second
	// Clients of a test server should never be throttled on the client side.
	clientQPS   = 1000
	clientBurst = 2000
)

// Options configure Start.
type Options struct {
	Mode    Mode   // default ModeCRD
	Listen  string // "127.0.0.1:0" default; only 127.0.0.1 hosts allowed
	Verbose bool   // route server logs to stderr for debugging (process-wide once set)
}

// Server is a running in-process API server with its own etcd and temporary directory.
type Server struct {
	mode   Mode
	dir    string
	url    string
	caPEM  []byte
	admin  keyPair // client certificate of the admin user
	etcd   *embed.Etcd
	cancel context.CancelFunc
	done   chan struct{} // closed when the API server's Run returns
	runErr error         // valid once done is closed
	// release frees process-global names the server reserved.
	release func()

	stopOnce sync.Once
	stopErr  error
}

// Start runs an API server and returns once it reports ready. ctx bounds only
// the start; the server runs until Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Mode == "" {
		opts.Mode = ModeCRD
	}
	if opts.Mode != ModeCRD && opts.Mode != ModeFull {
		return nil, fmt.Errorf("unknown mode %q (want %q or %q)", opts.Mode, ModeCRD, ModeFull)
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if err := checkListen(opts.Listen); err != nil {
		return nil, err
	}
	setupLogging(opts.Verbose)

	dir, err := makeTempDir()
	if err != nil {
		return nil, err
	}
	s := &Server{mode: opts.Mode, dir: dir, done: make(chan struct{}), release: func() {}}
	if err := s.start(ctx, opts); err != nil {
		if stopErr := s.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context, opts Options) error {
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	s.caPEM = ca.pem
	serving, err := ca.servingCert()
	if err != nil {
		return err
	}
	// system:masters is the group kube-apiserver authorises before RBAC;
	// CRD mode allows everyone everything anyway.
	if s.admin, err = ca.clientCert("flux-sandbox-admin", "system:masters"); err != nil {
		return err
	}

	var etcdURL string
	s.etcd, etcdURL, err = startEtcd(ctx, s.dir, opts.Verbose)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.Listen, err)
	}
	s.url = "https://" + ln.Addr().String()

	// The server must outlive ctx: a cancelled server context makes failing
	// post-start hooks call klog.Fatal, which exits the whole process.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel

	var run func(context.Context) error
	switch s.mode {
	case ModeCRD:
		run, err = s.buildCRD(ln, ca, serving, etcdURL)
	case ModeFull:
		run, err = s.buildFull(runCtx, ln, ca, serving, etcdURL)
	}
	if err != nil {
		_ = ln.Close()
		close(s.done)
		return err
	}
	go func() {
		defer close(s.done)
		s.runErr = run(runCtx)
	}()
	return s.waitReady(ctx)
}

// waitReady polls /readyz (all post-start hooks done), and in full mode also
// waits for the default namespace, which a controller creates after start.
func (s *Server) waitReady(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = s.probeReady(ctx, client)
		if last == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("API server exited while starting: %w", s.runErrOrExit())
		case <-ctx.Done():
			return fmt.Errorf("API server not ready (last: %v): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

func (s *Server) probeReady(ctx context.Context, client kubernetes.Interface) error {
	// A server that failed before serving never answers on the pre-bound
	// listener; the per-probe bound lets waitReady notice that it exited.
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var code int
	res := client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
	if err := res.Error(); err != nil && code == 0 {
		return fmt.Errorf("/readyz: %w", err)
	}
	if code != http.StatusOK {
		body, _ := res.Raw()
		return fmt.Errorf("/readyz answered %d: %s", code, body)
	}
	if s.mode == ModeFull {
		if _, err := client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("default namespace: %w", err)
		}
	}
	return nil
}

func (s *Server) runErrOrExit() error {
	if s.runErr != nil {
		return s.runErr
	}
	return errors.New("Run returned without an error")
}

// Mode reports which API server this is.
func (s *Server) Mode() Mode { return s.mode }

// URL is the server's https base URL on 127.0.0.1.
func (s *Server) URL() string { return s.url }

// RESTConfig returns a fresh admin configuration on every call, so callers may
// modify it. It authenticates with a client certificate for user
// flux-sandbox-admin in group system:masters, which full mode's RBAC lets do
// everything; CRD mode allows every request.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:  s.url,
		QPS:   clientQPS,
		Burst: clientBurst,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   append([]byte(nil), s.caPEM...),
			CertData: append([]byte(nil), s.admin.certPEM...),
			KeyData:  append([]byte(nil), s.admin.keyPEM...),
		},
	}
}

// WriteKubeconfig writes a kubeconfig (mode 0600) with the server's CA and the
// admin client certificate embedded, for kubectl and other clients.
func (s *Server) WriteKubeconfig(path string) error {
	const name = "flux-sandbox"
	user := &clientcmdapi.AuthInfo{
		ClientCertificateData: s.admin.certPEM,
		ClientKeyData:         s.admin.keyPEM,
	}
	cfg := clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{
			name: {Server: s.url, CertificateAuthorityData: s.caPEM},
		},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{name: user},
		Contexts: map[string]*clientcmdapi.Context{
			name: {Cluster: name, AuthInfo: name, Namespace: "default"},
		},
		CurrentContext: name,
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// Stop shuts the API server down, closes etcd and removes the temporary
// directory. It is safe to call more than once and from several goroutines;
// later calls return the first call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	if s.cancel != nil {
		s.cancel()
		select {
		case <-s.done:
			if s.runErr != nil {
				errs = append(errs, fmt.Errorf("API server: %w", s.runErr))
			}
		case <-time.After(stopTimeout):
			errs = append(errs, fmt.Errorf("API server did not stop within %s", stopTimeout))
		}
	}
	s.release()
	// etcd goes last: the API server's storage layer talks to it until Run returns.
	if s.etcd != nil {
		s.etcd.Close()
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", s.dir, err))
	}
	return errors.Join(errs...)
}

// checkListen allows only 127.0.0.1, so a test or sandbox never exposes an
// unauthenticated server beyond the machine.
func checkListen(listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", listen, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("listen address %q: only host 127.0.0.1 is allowed", listen)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("listen address %q: %w", listen, err)
	}
	return nil
}
