package testkit

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/embedded"
)

// Process is a child process of the test (a role of the real binary).
type Process struct {
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
}

// Start runs bin with args; its output goes to a log file that is printed
// when the test fails.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", filepath.Base(bin), b)
		}
	})
	return p
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to 20s for a clean exit.
func (p *Process) Stop() {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.Kill()
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig (e.g. SIGSTOP/SIGCONT to freeze and resume a role).
func (p *Process) Signal(sig syscall.Signal) { _ = p.Cmd.Process.Signal(sig) }

// MetricsText returns the Prometheus text a process serves on its admin
// address (/metrics), failing the test when it cannot be read.
func MetricsText(t testing.TB, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// StartOnFreePort starts bin with args(addr) for a free loopback address
// and waits until it listens there. A free port can be taken by another
// test's listener between being found and being bound: a process that
// exits saying so is started again on another port.
func StartOnFreePort(t testing.TB, bin string, args func(addr string) []string) (*Process, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p := Start(t, bin, args(addr)...)
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !p.Exited(); {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := embedded.WaitTCP(ctx, addr)
			cancel()
			if err == nil {
				return p, addr
			}
		}
		b, _ := os.ReadFile(p.Log)
		if !p.Exited() || !strings.Contains(string(b), "address already in use") || attempt == 5 {
			t.Fatalf("%s did not listen on %s:\n%s", filepath.Base(bin), addr, b)
		}
	}
}
