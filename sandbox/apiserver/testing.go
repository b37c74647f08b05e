package apiserver

import (
	"testing"
)

// StartT starts a server for a test, installs the Flux CRDs and stops the
// server when the test ends. It fails the test on any error.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start %s API server: %v", modeName(opts.Mode), err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop %s API server: %v", s.Mode(), err)
		}
	})
	if err := s.InstallFluxCRDs(t.Context()); err != nil {
		t.Fatalf("install Flux CRDs: %v", err)
	}
	return s
}

func modeName(m Mode) Mode {
	if m == "" {
		return ModeCRD
	}
	return m
}
