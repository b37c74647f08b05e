package apiserver

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestScratchParallelFull(t *testing.T) {
	for i, m := range []Mode{ModeFull, ModeFull, ModeCRD} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			t0 := time.Now()
			s := StartT(t, Options{Mode: m})
			t.Logf("%s started+installed in %v", m, time.Since(t0))
			if m == ModeFull {
				cfg, err := s.ServiceAccountConfig(t.Context(), "x", "y")
				if err != nil {
					t.Fatal(err)
				}
				_ = cfg
				if _, err := kubeClient(t, s).CoreV1().ConfigMaps("x").Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			t1 := time.Now()
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s stopped in %v", m, time.Since(t1))
		})
	}
}
