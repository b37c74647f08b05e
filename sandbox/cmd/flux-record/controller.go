package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// controller is a running real Flux controller.
type controller struct {
	name    string
	version string
	// flags are those it ran with that say how it behaves: not its
	// addresses or storage path, which change with every run.
	flags  []string
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan error
}

// startController runs name from PATH against kubeconfig with leader
// election off, every namespace watched, metrics and health on free
// 127.0.0.1 ports, and waits until /healthz answers.
func startController(ctx context.Context, logger *slog.Logger, kubeconfig, name string, args []string) (*controller, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s not found in PATH: build it with `make .bin/%s` and put .bin in PATH (make record-timelines does both): %w", name, name, err)
	}
	version, err := releaseOf(path, name)
	if err != nil {
		return nil, err
	}
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	health := addrs[1]
	all := append([]string{"--metrics-addr=" + addrs[0], "--health-addr=" + health,
		"--enable-leader-election=false", "--watch-all-namespaces=true",
		"--log-encoding=json"}, args...)
	c := &controller{name: name, version: version, logs: &lockedBuffer{}, exited: make(chan error, 1)}
	for _, a := range all {
		if !strings.Contains(a, "-addr=") && !strings.HasPrefix(a, "--storage-path=") {
			c.flags = append(c.flags, a)
		}
	}
	c.cmd = exec.Command(path, all...)
	c.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "RUNTIME_NAMESPACE=flux-system")
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	logger.Info("started controller", "name", name, "version", version)
	return c, c.waitHealthy(ctx, health)
}

func (c *controller) waitHealthy(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Errorf("%s exited early (%v):\n%s", c.name, err, c.logs)
		case <-ctx.Done():
			return fmt.Errorf("%s /healthz did not answer 200 within a minute:\n%s", c.name, c.logs)
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
}

// stop interrupts the controller and waits up to 10 seconds for it.
func (c *controller) stop() error {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		if err := c.cmd.Process.Kill(); err != nil {
			return fmt.Errorf("kill %s: %w", c.name, err)
		}
		<-c.exited
	}
	return nil
}

// releaseOf reads the controller's release from its build information:
// the version of its own api module, which each release pins to itself
// (tools/flux-controllers/build.sh builds the module as the main module,
// whose own version reads "(devel)").
func releaseOf(path, name string) (string, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read build information of %s: %w", path, err)
	}
	api := "github.com/fluxcd/" + name + "/api"
	for _, d := range info.Deps {
		if d.Path == api {
			return d.Version, nil
		}
	}
	return "", fmt.Errorf("%s: %s is not a dependency of this binary; is it the Flux controller?", path, api)
}

// freeAddrs returns n 127.0.0.1 addresses nothing listens on now.
func freeAddrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free port on 127.0.0.1: %w", err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// lockedBuffer collects a process's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
