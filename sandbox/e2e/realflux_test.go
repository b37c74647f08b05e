package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The real Flux controllers, built from their modules by
// tools/flux-controllers/build.sh (make .bin/<controller>) and run against
// the in-process API server in full mode, as tools/flux-controllers/README.md
// describes. They are looked up in PATH, which make test-e2e puts .bin first
// in.

// realController is a running Flux controller process.
type realController struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	// health is the controller's /healthz address.
	health string
}

// controllerBinary finds a real controller, or fails the test with the
// command that builds it.
func controllerBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: build it with `make .bin/%s` and put .bin in PATH (make test-e2e does both)", name, name)
	}
	return path
}

// freeAddr returns a 127.0.0.1 address nothing listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startController runs a real controller against the cluster with
// leader election off, watching every namespace, metrics and health on
// free 127.0.0.1 ports, and args. It waits until /healthz answers and
// stops the process when the test ends.
func startController(t testing.TB, c *cluster, name string, args ...string) *realController {
	t.Helper()
	rc := &realController{name: name, logs: &syncBuffer{}, health: freeAddr(t)}
	all := append([]string{
		"--metrics-addr=" + freeAddr(t), "--health-addr=" + rc.health,
		"--enable-leader-election=false", "--watch-all-namespaces=true",
		"--log-encoding=json", "--log-level=debug",
	}, args...)
	rc.cmd = exec.Command(controllerBinary(t, name), all...)
	rc.cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "RUNTIME_NAMESPACE=flux-system")
	rc.cmd.Stdout, rc.cmd.Stderr = rc.logs, rc.logs
	if err := rc.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- rc.cmd.Wait() }()
	t.Cleanup(func() {
		_ = rc.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = rc.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, rc.logs)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("%s exited early (%v):\n%s", name, err, rc.logs)
		default:
		}
		resp, err := http.Get("http://" + rc.health + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return rc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /healthz did not answer 200 within 60s:\n%s", name, rc.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ensureNamespaces creates the namespaces the test needs.
func ensureNamespaces(t testing.TB, kc kubernetes.Interface, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range names {
		_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metaCreate)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
}
