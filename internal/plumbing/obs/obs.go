// Package obs is imstream's observability plumbing: the logger built from
// config, the Prometheus registry, and the admin HTTP server of every role
// (/metrics, /healthz, /readyz).
package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/tick"
)

// Version is set at build time (-ldflags "-X .../obs.Version=..."); a
// build without it takes the module's version (go install ...@v1.2.3) or
// the VCS revision Go stamped in the binary ("dev-<12 hex>[-dirty]").
var Version = "dev"

func init() {
	if Version == "dev" {
		Version = buildVersion()
	}
}

// buildVersion reads the version Go stamped in the binary.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	v := "dev-" + rev[:min(12, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

// NewLogger returns a slog logger configured by cfg.
func NewLogger(cfg config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Registry is a prometheus.Registry that remembers what was registered, so
// the metric names a process exports can be listed (docs and dashboard
// tests check against them).
type Registry struct {
	*prometheus.Registry
	mu         sync.Mutex
	collectors []prometheus.Collector
}

// Register implements prometheus.Registerer.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.collectors = append(r.collectors, c)
	r.mu.Unlock()
	return nil
}

// MustRegister implements prometheus.Registerer.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names returns the names of every metric registered, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	cs := append([]prometheus.Collector(nil), r.collectors...)
	r.mu.Unlock()
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			seen[m[1]] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewRegistry returns a registry with the Go and process collectors and
// imstream_build_info.
func NewRegistry() *Registry {
	reg := &Registry{Registry: prometheus.NewRegistry()}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bi := GaugeVec("imstream_build_info", "Build information; always 1.", "version")
	bi.WithLabelValues(Version).Set(1)
	reg.MustRegister(bi)
	return reg
}

// Readiness collects named readiness checks for /readyz.
type Readiness struct {
	mu       sync.Mutex
	checks   map[string]func(ctx context.Context) error
	warnings map[string]func() string
	probes   []*Probe
}

// Warn registers a warning: while it returns a non-empty text, /readyz
// still answers 200 but says so in a "warning: <name>: <text>" line
// (something an operator must look at that stopped nothing).
func (r *Readiness) Warn(name string, warning func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.warnings == nil {
		r.warnings = map[string]func() string{}
	}
	r.warnings[name] = warning
}

// Add registers a check; /readyz fails while any check fails.
func (r *Readiness) Add(name string, check func(ctx context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string]func(ctx context.Context) error{}
	}
	r.checks[name] = check
}

func (r *Readiness) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	checks := make(map[string]func(ctx context.Context) error, len(r.checks))
	for k, v := range r.checks {
		checks[k] = v
	}
	var warned []string
	for name, warning := range r.warnings {
		if w := warning(); w != "" {
			warned = append(warned, "warning: "+name+": "+w)
		}
	}
	r.mu.Unlock()
	sort.Strings(warned)
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	var failed []string
	for name, check := range checks {
		if err := check(ctx); err != nil {
			failed = append(failed, name+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		http.Error(w, strings.Join(append(failed, warned...), "\n"), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte(strings.Join(append([]string{"ok"}, warned...), "\n") + "\n"))
}

// Server is the admin HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
	Mux *http.ServeMux
}

// Listen binds the admin server on addr (e.g. 127.0.0.1:9100; port 0 picks
// a free one) with /metrics, /healthz and /readyz; more handlers may be
// added to Mux before Serve.
func Listen(addr string, reg *Registry, ready *Readiness) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", ready.serve)
	return &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, Mux: mux}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Probe checks a dependency in the background every interval. Its
// readiness check fails until the first success, and afterwards once the
// dependency has been failing for longer than grace: a blip does not take
// a process out of service, an outage does, and the reason names it.
type Probe struct {
	name     string
	check    func(ctx context.Context) error
	interval time.Duration
	grace    time.Duration

	mu      sync.Mutex
	ok      bool      // the last check succeeded
	ever    bool      // a check ever succeeded
	failing time.Time // when the current run of failures began
	lastErr error
}

// AddProbe registers a background check (started by RunProbes) and its
// readiness check.
func (r *Readiness) AddProbe(name string, interval, grace time.Duration, check func(ctx context.Context) error) *Probe {
	p := &Probe{name: name, check: check, interval: interval, grace: grace}
	r.mu.Lock()
	r.probes = append(r.probes, p)
	r.mu.Unlock()
	r.Add(name, func(context.Context) error { return p.state(time.Now()) })
	return p
}

// RunProbes runs the probes until ctx ends.
func (r *Readiness) RunProbes(ctx context.Context) {
	r.mu.Lock()
	probes := append([]*Probe(nil), r.probes...)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(ctx) }()
	}
	wg.Wait()
}

func (p *Probe) run(ctx context.Context) {
	probe := func() {
		cctx, cancel := context.WithTimeout(ctx, max(p.interval, time.Second))
		err := p.check(cctx)
		cancel()
		if ctx.Err() == nil {
			p.record(time.Now(), err)
		}
	}
	probe()
	tick.Every(ctx, p.interval, probe)
}

func (p *Probe) record(now time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.ok, p.ever, p.lastErr = true, true, nil
		return
	}
	if p.ok || p.failing.IsZero() {
		p.failing = now
	}
	p.ok, p.lastErr = false, err
}

func (p *Probe) state(now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.ok:
		return nil
	case !p.ever && p.lastErr == nil:
		return fmt.Errorf("not checked yet")
	case !p.ever:
		return fmt.Errorf("unreachable since start: %v", p.lastErr)
	case now.Sub(p.failing) > p.grace:
		return fmt.Errorf("unreachable for %s: %v", now.Sub(p.failing).Round(time.Second), p.lastErr)
	}
	return nil // failing, but for less than grace
}
