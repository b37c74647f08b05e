package apiserver

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
)

var (
	logOnce sync.Once
	// verboseLogs is sticky: klog is process-global, so once any server asks
	// for verbose logs, every server in the process logs to stderr.
	verboseLogs atomic.Bool
)

// setupLogging installs klog's backend once per process. Setting it again
// while servers run would race with their logging goroutines.
func setupLogging(verbose bool) {
	if verbose {
		verboseLogs.Store(true)
	}
	logOnce.Do(func() {
		// Several kube-apiservers in one process each try to apply the same
		// logging configuration; the default would make the second one fail.
		logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
		stderr := funcr.New(func(prefix, args string) {
			if prefix != "" {
				_, _ = os.Stderr.WriteString(prefix + ": " + args + "\n")
				return
			}
			_, _ = os.Stderr.WriteString(args + "\n")
		}, funcr.Options{Verbosity: 10})
		klog.SetLogger(logr.New(gatedSink{stderr.GetSink()}))
	})
}

// gatedSink drops everything unless verbose logs were asked for, before any
// formatting work is done.
type gatedSink struct{ logr.LogSink }

func (g gatedSink) Enabled(level int) bool {
	return verboseLogs.Load() && g.LogSink.Enabled(level)
}

func (g gatedSink) Info(level int, msg string, kv ...any) {
	if verboseLogs.Load() {
		g.LogSink.Info(level, msg, kv...)
	}
}

func (g gatedSink) Error(err error, msg string, kv ...any) {
	// klog calls Error without asking Enabled first.
	if verboseLogs.Load() {
		g.LogSink.Error(err, msg, kv...)
	}
}

func (g gatedSink) WithValues(kv ...any) logr.LogSink {
	return gatedSink{g.LogSink.WithValues(kv...)}
}

func (g gatedSink) WithName(name string) logr.LogSink {
	return gatedSink{g.LogSink.WithName(name)}
}
