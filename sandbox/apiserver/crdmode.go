package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"

	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	crdoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/union"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	apiservercompat "k8s.io/apiserver/pkg/util/compatibility"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes/scheme"
	basecompat "k8s.io/component-base/compatibility"
)

// buildMu serialises building options and configs, which touches
// process-global registries (the default component globals registry, metrics,
// feature gates) that are not safe for concurrent first use. Creating the
// handlers and running the servers afterwards is.
var buildMu sync.Mutex

// newComponentRegistry gives each server its own version and feature gate
// registry, so that parallel servers do not set the process-wide one.
func newComponentRegistry() (basecompat.ComponentGlobalsRegistry, error) {
	gate := utilfeature.DefaultMutableFeatureGate.DeepCopy()
	version := apiservercompat.DefaultBuildEffectiveVersion()
	version.SetEmulationVersion(gate.EmulationVersion())
	registry := basecompat.NewComponentGlobalsRegistry()
	if err := registry.Register(basecompat.DefaultKubeComponent, version, gate); err != nil {
		return nil, fmt.Errorf("register component globals: %w", err)
	}
	return registry, nil
}

// buildCRD assembles apiextensions-apiserver with the recommended options
// minus everything that needs a core Kubernetes API behind it: no delegated
// authentication, authorisation or admission, no core informers, no priority
// and fairness. Every request is allowed. Client certificates from ca
// authenticate (kubectl prompts for a password when a kubeconfig user has no
// credentials); anything else is anonymous.
func (s *Server) buildCRD(ln net.Listener, ca *authority, serving keyPair, etcdURL string) (func(context.Context) error, error) {
	paths, err := writeFiles(s.dir,
		namedFile{"serving.crt", serving.certPEM},
		namedFile{"serving.key", serving.keyPEM})
	if err != nil {
		return nil, err
	}
	cfg, err := crdModeConfig(ln, ca, paths, etcdURL)
	if err != nil {
		return nil, err
	}
	completed := cfg.Complete()
	// Complete switches discovery off because it expects to sit behind
	// kube-apiserver; standing alone, kubectl and discovery clients need it.
	completed.GenericConfig.EnableDiscovery = true
	server, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("create apiextensions-apiserver: %w", err)
	}
	return server.GenericAPIServer.PrepareRun().RunWithContext, nil
}

// crdModeConfig assembles the apiextensions-apiserver's configuration
// under buildMu, as its steps set process-wide component globals.
func crdModeConfig(ln net.Listener, ca *authority, paths []string, etcdURL string) (*apiserver.Config, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	o, err := crdModeOptions(ln, paths, etcdURL)
	if err != nil {
		return nil, err
	}
	generic, err := crdModeGenericConfig(o, ca)
	if err != nil {
		return nil, err
	}
	return &apiserver.Config{
		GenericConfig: generic,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: crdoptions.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd, generic.ResourceTransformers, generic.StorageObjectCountTracker),
			ServiceResolver:      noServices{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, generic.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}, nil
}

// crdModeOptions are the apiextensions-apiserver's options serving on ln
// with the certificate and key at paths, without core API, admission,
// authentication, authorization or priority and fairness.
func crdModeOptions(ln net.Listener, paths []string, etcdURL string) (*crdoptions.CustomResourceDefinitionsServerOptions, error) {
	o := crdoptions.NewCustomResourceDefinitionsServerOptions(io.Discard, io.Discard)
	registry, err := newComponentRegistry()
	if err != nil {
		return nil, err
	}
	o.ServerRunOptions.ComponentGlobalsRegistry = registry
	o.ServerRunOptions.ShutdownWatchTerminationGracePeriod = watchDrainPeriod
	rec := o.RecommendedOptions
	loopback := ln.Addr().(*net.TCPAddr)
	rec.SecureServing.Listener = ln
	rec.SecureServing.BindAddress = loopback.IP
	rec.SecureServing.BindPort = loopback.Port
	rec.SecureServing.ExternalAddress = loopback.IP
	rec.SecureServing.ServerCert.CertKey = genericoptions.CertKey{CertFile: paths[0], KeyFile: paths[1]}
	rec.Etcd.StorageConfig.Transport.ServerList = []string{etcdURL}
	rec.CoreAPI = nil
	rec.Admission = nil
	rec.Authentication = nil
	rec.Authorization = nil
	rec.Features.EnablePriorityAndFairness = false
	if err := registry.Set(); err != nil {
		return nil, fmt.Errorf("apply component globals: %w", err)
	}
	if err := o.Complete(); err != nil {
		return nil, fmt.Errorf("complete apiextensions options: %w", err)
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("validate apiextensions options: %w", err)
	}
	return o, nil
}

// crdModeGenericConfig applies the options to a generic server
// configuration, by hand: the stock options.Config() needs a core informer
// factory that this mode does not have. Client certificates from ca
// authenticate, anything else is anonymous, and everything is allowed.
func crdModeGenericConfig(o *crdoptions.CustomResourceDefinitionsServerOptions, ca *authority) (*genericapiserver.RecommendedConfig, error) {
	generic := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&generic.Config); err != nil {
		return nil, fmt.Errorf("apply server run options: %w", err)
	}
	if err := o.RecommendedOptions.ApplyTo(generic); err != nil {
		return nil, fmt.Errorf("apply recommended options: %w", err)
	}
	if err := o.APIEnablement.ApplyTo(&generic.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return nil, fmt.Errorf("apply API enablement: %w", err)
	}
	clientCA, err := dynamiccertificates.NewStaticCAContent("flux-sandbox-client-ca", ca.pem)
	if err != nil {
		return nil, fmt.Errorf("load client CA: %w", err)
	}
	if err := generic.Authentication.ApplyClientCert(clientCA, generic.SecureServing); err != nil {
		return nil, fmt.Errorf("apply client CA: %w", err)
	}
	generic.Authentication.Authenticator = union.New(
		x509request.NewDynamic(clientCA.VerifyOptions, x509request.CommonNameUserConversion),
		anonymous.NewAuthenticator(nil))
	generic.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
	definitions := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme)
	generic.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(definitions, namer)
	generic.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(definitions, namer)
	return generic, nil
}

// noServices resolves no Service: there are no Services in CRD mode, so CRD
// conversion webhooks cannot be reached.
type noServices struct{}

func (noServices) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, errors.New("CRD mode has no Services to resolve webhook " + namespace + "/" + name)
}
