package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/spf13/pflag"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

const (
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	// serviceClusterIPRange only feeds ClusterIP allocation; nothing routes to it.
	serviceClusterIPRange = "10.0.0.0/24"
	// tokenLifetime covers a long sandbox session; tests never come close.
	tokenLifetime = 24 * 60 * 60
)

// informerSeq makes informer names unique: client-go allows each name once per process.
var informerSeq atomic.Uint64

// buildFull goes through kube-apiserver's own start-up: flags → options →
// Complete → Validate → NewConfig → Complete → CreateServerChain → PrepareRun.
func (s *Server) buildFull(ctx context.Context, ln net.Listener, ca *authority, serving keyPair, etcdURL string) (func(context.Context) error, error) {
	args, err := s.fullModeArgs(ln, ca, serving, etcdURL)
	if err != nil {
		return nil, err
	}
	completedConfig, err := s.fullModeConfig(ctx, ln, args)
	if err != nil {
		return nil, err
	}
	// The rest builds this server's own handlers and OpenAPI documents, the
	// slow part (seconds under -race), and may run alongside other servers.
	chain, err := app.CreateServerChain(completedConfig)
	if err != nil {
		return nil, fmt.Errorf("create kube-apiserver server chain: %w", err)
	}
	prepared, err := chain.PrepareRun()
	if err != nil {
		return nil, fmt.Errorf("prepare kube-apiserver: %w", err)
	}
	return prepared.Run, nil
}

// fullModeArgs writes the certificates and keys into the server's
// directory and returns kube-apiserver's command line for them.
func (s *Server) fullModeArgs(ln net.Listener, ca *authority, serving keyPair, etcdURL string) ([]string, error) {
	saKey, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	paths, err := writeFiles(s.dir,
		namedFile{"serving.crt", serving.certPEM},
		namedFile{"serving.key", serving.keyPEM},
		namedFile{"client-ca.crt", ca.pem},
		namedFile{"service-account.key", saKey})
	if err != nil {
		return nil, err
	}
	servingCert, servingKey, clientCA, saKeyFile := paths[0], paths[1], paths[2], paths[3]
	loopback := ln.Addr().(*net.TCPAddr)
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + loopback.IP.String(),
		"--advertise-address=" + loopback.IP.String(),
		"--secure-port=" + strconv.Itoa(loopback.Port),
		"--cert-dir=" + filepath.Join(s.dir, "certs"),
		"--tls-cert-file=" + servingCert,
		"--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + clientCA,
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + saKeyFile,
		"--service-account-signing-key-file=" + saKeyFile,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		// The default is AlwaysAllow, which would make every RBAC test pass.
		"--authorization-mode=Node,RBAC",
		// The endpoint reconcilers would publish 127.0.0.1 as the kubernetes Service endpoint.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--shutdown-watch-termination-grace-period=" + watchDrainPeriod.String(),
	}, nil
}

// fullModeConfig turns the command line into a completed configuration,
// serving on the pre-bound listener. It holds buildMu: these steps set
// process-wide component globals.
func (s *Server) fullModeConfig(ctx context.Context, ln net.Listener, args []string) (app.CompletedConfig, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	var none app.CompletedConfig
	o := options.NewServerRunOptions()
	registry, err := newComponentRegistry()
	if err != nil {
		return none, err
	}
	o.GenericServerRunOptions.ComponentGlobalsRegistry = registry
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, set := range o.Flags().FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return none, fmt.Errorf("parse kube-apiserver flags: %w", err)
	}
	// Serving on the pre-bound listener leaves no window in which another
	// process could take the port.
	o.SecureServing.Listener = ln
	if err := registry.Set(); err != nil {
		return none, fmt.Errorf("apply component globals: %w", err)
	}
	completed, err := o.Complete(ctx)
	if err != nil {
		return none, fmt.Errorf("complete kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) > 0 {
		return none, fmt.Errorf("validate kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	name, err := cache.NewInformerName("flux-sandbox-kube-apiserver-" + strconv.FormatUint(informerSeq.Add(1), 10))
	if err != nil {
		return none, fmt.Errorf("reserve informer name: %w", err)
	}
	s.release = name.Release
	completed.InformerName = name
	config, err := app.NewConfig(completed)
	if err != nil {
		return none, fmt.Errorf("kube-apiserver config: %w", err)
	}
	completedConfig, err := config.Complete()
	if err != nil {
		return none, fmt.Errorf("complete kube-apiserver config: %w", err)
	}
	return completedConfig, nil
}

// ServiceAccountConfig returns a client configuration that authenticates as
// the ServiceAccount namespace/name with a token from the TokenRequest API,
// and so is held to that account's RBAC. It creates the namespace and the
// ServiceAccount if they do not exist. Full mode only.
func (s *Server) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	if s.mode != ModeFull {
		return nil, fmt.Errorf("service account clients need mode %q, this server runs %q", ModeFull, s.mode)
	}
	client, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		return nil, fmt.Errorf("create admin client: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if _, err := client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(tokenLifetime))}}
	tok, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request token for %s/%s: %w", namespace, name, err)
	}
	if tok.Status.Token == "" {
		return nil, errors.New("token request for " + namespace + "/" + name + " returned no token")
	}
	cfg := s.RESTConfig()
	cfg.CertData, cfg.KeyData = nil, nil
	cfg.BearerToken = tok.Status.Token
	return cfg, nil
}

func ptrTo[T any](v T) *T { return &v }
