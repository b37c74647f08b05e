package main

// The exporters as processes: start, logs, listen address, memory, stop.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// freePorts picks two free loopback ports. Another process could take one
// before the exporter binds it; the exporter would then fail to start and
// the run would stop with its log.
func freePorts() (int, int, error) {
	var ports [2]int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

// binVersion is the first line the binary prints about its version.
func binVersion(ctx context.Context, t *target) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, t.bin, t.versionArg).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

func readMemory(pid int) (procMemory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return procMemory{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	m, err := parseProcStatus(string(b))
	if err != nil {
		return m, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return m, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// proc is a running exporter.
type proc struct {
	cmd     *exec.Cmd
	log     *logSink
	started time.Time
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

func startProc(bin string, args []string) (*proc, error) {
	p := &proc{log: &logSink{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Its own process group, so that Ctrl-C reaches only this program,
	// which then stops the exporter itself; and SIGKILL should this program
	// die without cleaning up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// metricsURL is the target's /metrics once it is known.
func (p *proc) metricsURL(t *target) string {
	if t.listen != "" {
		return "http://" + t.listen + "/metrics"
	}
	if addr := p.log.listenAddress(); addr != "" {
		return "http://" + addr + "/metrics"
	}
	return ""
}

// stop sends SIGTERM, and SIGKILL after 15 seconds.
func (p *proc) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s ignored SIGTERM for 15s and was killed", filepath.Base(p.cmd.Path))
	}
}

// logSink keeps the end of a process's output, for error messages, and
// watches it for the line saying where flux_exporter listens.
type logSink struct {
	mu      sync.Mutex
	buf     []byte
	partial []byte
	listen  string
}

// logTail bounds what is kept of an exporter's log.
const logTail = 16 << 10

func (l *logSink) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	if len(l.buf) > 2*logTail {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-logTail:]...)
	}
	if l.listen == "" {
		l.partial = append(l.partial, b...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			if addr := listenLine(l.partial[:i]); addr != "" {
				l.listen, l.partial = addr, nil
				break
			}
			l.partial = l.partial[i+1:]
		}
		if len(l.partial) > logTail { // a line this long is not the one wanted
			l.partial = nil
		}
	}
	return len(b), nil
}

// listenLine returns the address of flux_exporter's metrics listener from
// its JSON "Listening on" log line; the events listener, when enabled, logs
// the same message with a listener key.
func listenLine(line []byte) string {
	if !bytes.Contains(line, []byte("Listening on")) {
		return ""
	}
	var l struct{ Msg, Address, Listener string }
	if json.Unmarshal(line, &l) != nil || l.Msg != "Listening on" || l.Listener != "" {
		return ""
	}
	return l.Address
}

func (l *logSink) listenAddress() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listen
}

func (l *logSink) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return string(b)
}
