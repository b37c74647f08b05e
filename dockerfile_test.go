package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with continuation lines joined.
type instruction struct {
	cmd  string // upper case, e.g. FROM
	args string
	line int
}

// parseDockerfile reads the instructions of a Dockerfile; no Docker engine
// runs here, so the image is checked statically.
func parseDockerfile(path string) ([]instruction, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	var (
		out     []instruction
		pending strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			pending.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		pending.WriteString(line)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		pending.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("%s: line %d: continuation at end of file", path, start)
	}
	return out, nil
}

// only returns the arguments of the single instruction cmd.
func only(t *testing.T, ins []instruction, cmd string) string {
	t.Helper()
	var found []instruction
	for _, i := range ins {
		if i.cmd == cmd {
			found = append(found, i)
		}
	}
	if len(found) != 1 {
		t.Fatalf("Dockerfile has %d %s instructions, want exactly 1: %+v", len(found), cmd, found)
	}
	return found[0].args
}

// defaultListenAddress reads the default of --web.listen-address from the
// kingpinflag.AddFlags call in main.go, a string literal or a constant.
func defaultListenAddress(t *testing.T) string {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	var arg ast.Expr
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			for i, name := range n.Names {
				if i < len(n.Values) {
					if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name] = lit.Value
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if ok && sel.Sel.Name == "AddFlags" && len(n.Args) == 2 {
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "kingpinflag" {
					arg = n.Args[1]
				}
			}
		}
		return true
	})
	var quoted string
	switch a := arg.(type) {
	case *ast.BasicLit:
		quoted = a.Value
	case *ast.Ident:
		quoted = consts[a.Name]
	}
	addr, err := strconv.Unquote(quoted)
	if err != nil {
		t.Fatalf("cannot read the default listen address from kingpinflag.AddFlags in main.go (got %q): %v", quoted, err)
	}
	return addr
}

func TestDockerfile(t *testing.T) {
	ins, err := parseDockerfile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) == 0 || ins[0].cmd != "FROM" {
		t.Fatalf("Dockerfile must start with FROM, starts with %+v", ins)
	}
	if base := only(t, ins, "FROM"); base != "quay.io/prometheus/busybox:latest" {
		t.Errorf("base image %q, want the Prometheus exporters' minimal base quay.io/prometheus/busybox:latest", base)
	}
	if user := only(t, ins, "USER"); user != "nobody" {
		t.Errorf("USER %q, want nobody", user)
	}

	_, port, err := net.SplitHostPort(defaultListenAddress(t))
	if err != nil {
		t.Fatal(err)
	}
	if expose := only(t, ins, "EXPOSE"); expose != port && expose != port+"/tcp" {
		t.Errorf("EXPOSE %q, want main.go's default listen port %s", expose, port)
	}

	var entrypoint []string
	if err := json.Unmarshal([]byte(only(t, ins, "ENTRYPOINT")), &entrypoint); err != nil {
		t.Fatalf("ENTRYPOINT must be exec (JSON) form so signals reach the exporter: %v", err)
	}
	if len(entrypoint) != 1 || entrypoint[0] != "/bin/flux_exporter" {
		t.Errorf("ENTRYPOINT %q, want [\"/bin/flux_exporter\"]", entrypoint)
	}

	// The binary comes from promu's per-platform output, to where the
	// entrypoint expects it.
	copyArgs := strings.Fields(only(t, ins, "COPY"))
	want := []string{".build/${OS}-${ARCH}/flux_exporter", "/bin/flux_exporter"}
	if strings.Join(copyArgs, " ") != strings.Join(want, " ") {
		t.Errorf("COPY %q, want %q", copyArgs, want)
	}
	args := map[string]bool{}
	for _, i := range ins {
		if i.cmd == "ARG" {
			name, _, _ := strings.Cut(i.args, "=")
			args[name] = true
		}
		if i.cmd == "RUN" {
			t.Errorf("line %d: RUN needs a shell and a build stage; the image only copies the promu binary", i.line)
		}
	}
	for _, a := range []string{"OS", "ARCH"} {
		if !args[a] {
			t.Errorf("COPY uses ${%s} but there is no ARG %s after FROM", a, a)
		}
	}
}
