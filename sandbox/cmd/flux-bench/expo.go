package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// promAccept is the Accept header Prometheus 3 sends with its default
// scrape_protocols (OpenMetrics 1.0.0, OpenMetrics 0.0.1, text 1.0.0, text
// 0.0.4), so that both exporters negotiate the format they would negotiate
// with a real Prometheus. Prometheus 2 sends the same order without the
// escaping parameters and text 1.0.0.
const promAccept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6," +
	"application/openmetrics-text;version=0.0.1;q=0.5," +
	"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4," +
	"text/plain;version=0.0.4;q=0.3,*/*;q=0.2"

// decode returns the exposition text of a response body sent with the
// given Content-Encoding.
func decode(body []byte, encoding string) ([]byte, error) {
	switch encoding {
	case "", "identity":
		return body, nil
	case "gzip":
		r, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected Content-Encoding %q", encoding)
	}
}

// lines calls fn with every sample line of a text or OpenMetrics
// exposition (comments and blank lines skipped) until fn returns false.
func lines(body []byte, fn func(line []byte) bool) {
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if !fn(line) {
			return
		}
	}
}

// metricName is the name at the start of a sample line.
func metricName(line []byte) []byte {
	if i := bytes.IndexAny(line, "{ "); i >= 0 {
		return line[:i]
	}
	return line
}

// countSamples counts the sample lines of an exposition, and those of the
// families whose name ends in infoSuffix: one per object in both exporters'
// output, which is how a complete scrape is recognised.
func countSamples(body []byte, infoSuffix string) (total, info int) {
	suffix := []byte(infoSuffix)
	lines(body, func(line []byte) bool {
		total++
		if bytes.HasSuffix(metricName(line), suffix) {
			info++
		}
		return true
	})
	return total, info
}

// parseLabels reads the label set of a sample line, `name{a="x",b="y"} 1`,
// undoing the exposition formats' escapes (\\, \" and \n).
func parseLabels(line []byte) (map[string]string, error) {
	open := bytes.IndexByte(line, '{')
	if open < 0 {
		return map[string]string{}, nil
	}
	labels := map[string]string{}
	s := line[open+1:]
	for {
		if len(s) > 0 && s[0] == ',' { // OpenMetrics allows a trailing comma
			s = s[1:]
		}
		if len(s) > 0 && s[0] == '}' {
			return labels, nil
		}
		eq := bytes.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, fmt.Errorf("malformed label set in %q", line)
		}
		name := string(s[:eq])
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s = s[i+1:]
				closed = true
				break
			}
			v.WriteByte(c)
		}
		if !closed {
			return nil, fmt.Errorf("unterminated label value in %q", line)
		}
		labels[name] = v.String()
		if len(s) == 0 {
			return nil, fmt.Errorf("unterminated label set in %q", line)
		}
		if s[0] != ',' && s[0] != '}' {
			return nil, fmt.Errorf("malformed label set in %q", line)
		}
	}
}

// findLabel returns label want of the first sample of family whose labels
// include every pair in match.
func findLabel(body []byte, family string, match map[string]string, want string) (string, bool, error) {
	prefix := []byte(family + "{")
	var (
		value string
		found bool
		err   error
	)
	lines(body, func(line []byte) bool {
		if !bytes.HasPrefix(line, prefix) {
			return true
		}
		var labels map[string]string
		if labels, err = parseLabels(line); err != nil {
			return false
		}
		for k, v := range match {
			if labels[k] != v {
				return true
			}
		}
		value, found = labels[want]
		return false
	})
	return value, found, err
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// procMemory is what /proc/<pid>/status says about a process's memory.
type procMemory struct {
	RSS int64 // VmRSS: resident now
	HWM int64 // VmHWM: the highest VmRSS over the process's lifetime
}

// parseProcStatus reads VmRSS and VmHWM (in kB) from /proc/<pid>/status.
func parseProcStatus(text string) (procMemory, error) {
	var m procMemory
	var seen int
	for line := range strings.Lines(text) {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("%s: unexpected %q", key, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
		seen++
	}
	if seen != 2 {
		return m, errors.New("VmRSS or VmHWM missing")
	}
	return m, nil
}
