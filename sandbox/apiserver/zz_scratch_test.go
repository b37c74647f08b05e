package apiserver

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestScratchTiming(t *testing.T) {
	for _, m := range []Mode{ModeCRD, ModeFull} {
		t0 := time.Now()
		s, err := Start(t.Context(), Options{Mode: m})
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := s.InstallFluxCRDs(t.Context()); err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		w, err := dynamicClient(t, s).Resource(gitRepositories).Namespace("x").Watch(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = w
		w2, err := kubeClient(t, s).CoreV1().ConfigMaps("").Watch(t.Context(), metav1.ListOptions{})
		_ = w2
		t3 := time.Now()
		err = s.Stop()
		t.Logf("%s: start %v install %v stop(with open watch) %v err=%v", m, t1.Sub(t0), t2.Sub(t1), time.Since(t3), err)
	}
}
