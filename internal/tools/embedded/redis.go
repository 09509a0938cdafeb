package embedded

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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

	"github.com/alicebob/miniredis/v2"
)

// ErrNoRedisServer means redis-server is not on PATH.
var ErrNoRedisServer = errors.New("redis-server not found on PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)")

// Redis is a redis-server child process (or an in-process stand-in).
type Redis struct {
	Addr    string
	InProc  bool // true when running the in-process fallback
	port    int
	dir     string
	args    []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	mini    *miniredis.Miniredis
	LogPath string
	pingTLS *tls.Config
}

// RedisOptions configures StartRedis.
type RedisOptions struct {
	Port int    // 0 picks a free port
	Dir  string // working dir (AOF, logs); "" makes a temp dir
	// Persist turns on the append-only file (fsync every second), so the
	// data survives Stop/Start.
	Persist bool
	// Extra are extra "--key value" arguments for redis-server.
	Extra []string
	// TLS serves TLS only (the port becomes --tls-port) with these PEM
	// files; clients are not asked for certificates.
	TLS *TLSFiles
}

// TLSFiles names a server certificate, its key and the CA.
type TLSFiles struct{ CertFile, KeyFile, CAFile string }

// StartRedis starts redis-server on 127.0.0.1. It returns ErrNoRedisServer
// when the binary is missing.
func StartRedis(o RedisOptions) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedisServer
	}
	port := o.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "imstream-redis-"); err != nil {
			return nil, err
		}
	}
	portArgs := []string{"--port", strconv.Itoa(port)}
	var pingTLS *tls.Config
	if o.TLS != nil {
		portArgs = []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", o.TLS.CertFile,
			"--tls-key-file", o.TLS.KeyFile, "--tls-ca-cert-file", o.TLS.CAFile, "--tls-auth-clients", "no"}
		pingTLS = &tls.Config{InsecureSkipVerify: true} // readiness only
	}
	args := []string{"--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--protected-mode", "no", "--daemonize", "no", "--logfile", "redis.log"}
	if o.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(append(portArgs, args...), o.Extra...)
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), port: port, dir: dir, args: append([]string{bin}, args...),
		LogPath: filepath.Join(dir, "redis.log"), pingTLS: pingTLS}
	if err := r.Start(); err != nil {
		return nil, err
	}
	return r, nil
}

// StartMiniRedis starts the in-process fallback (alicebob/miniredis): no
// persistence, for when redis-server is not installed.
func StartMiniRedis() (*Redis, error) {
	m, err := miniredis.Run()
	if err != nil {
		return nil, err
	}
	return &Redis{Addr: m.Addr(), InProc: true, mini: m}, nil
}

// Start (re)starts a stopped redis-server on the same port and waits until
// it answers PING.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mini != nil || r.cmd != nil {
		return nil
	}
	cmd := exec.Command(r.args[0], r.args[1:]...)
	cmd.Dir = r.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("embedded: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(r.Addr, r.pingTLS); err == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("embedded: redis-server exited at start; see %s", r.LogPath)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return fmt.Errorf("embedded: redis-server on %s did not answer within 10s", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.cmd, r.exited = cmd, exited
	return nil
}

// Stop shuts redis-server down cleanly (SIGTERM: the AOF is flushed) and
// waits for it to exit.
func (r *Redis) Stop() error { return r.signal(syscall.SIGTERM) }

// Kill stops redis-server with SIGKILL.
func (r *Redis) Kill() error { return r.signal(syscall.SIGKILL) }

func (r *Redis) signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mini != nil {
		r.mini.Close()
		return nil
	}
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
	return nil
}

// Close stops the server.
func (r *Redis) Close() error { return r.Stop() }

// ping checks that a server answers; an authentication error counts as an
// answer (the server is up, the caller has no credentials).
func ping(addr string, tlsCfg *tls.Config) error {
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: 200 * time.Millisecond}
	if tlsCfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("redis not ready: %s", strings.TrimSpace(line))
	}
	return nil
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Available returns addr when it can be listened on, else the same host
// with a free port (and moved=true): `imstream dev` on a machine where 9092,
// 9100 or 4444 is taken picks another and prints it.
func Available(addr string) (got string, moved bool, err error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr, false, nil
	}
	host, _, serr := net.SplitHostPort(addr)
	if serr != nil {
		return "", false, serr
	}
	ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", false, err
	}
	defer ln.Close()
	return ln.Addr().String(), true, nil
}

// WaitTCP waits until addr accepts connections or ctx ends.
func WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DialTCP connects to addr from localIP (any 127.x.y.z works on Linux
// loopback), so tests can appear as several hosts.
func DialTCP(addr, localIP string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	return d.Dial("tcp", addr)
}

// PID returns the redis-server process id (0 for the in-process fallback or
// when stopped).
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}
