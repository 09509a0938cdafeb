// Package bench is `imstream bench`: it starts the embedded stack (or uses
// the configured Kafka and Redis), measures the physical baselines first —
// raw pipelined RPUSH of the same entries into the same Redis, raw consume
// of the same records from the same broker — then runs the scenarios and
// reports each as events/s and as a ratio of its baseline, so numbers hold
// on a noisy shared machine.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/wiring/role"
)

// Options configures a run.
type Options struct {
	Events  int           // events of the burst scenarios (default 1 000 000)
	Latency time.Duration // length of the steady-rate scenario (default 60s)
	Rate    int           // events/s of the steady-rate scenario (default 20 000)
	// OnlineRate and OnlineFor shape the steady online-latency scenario
	// (default 1 000 RT/s for 20 s).
	OnlineRate int
	OnlineFor  time.Duration
	JSON       string   // where to write the results ("" skips)
	Only       []string // scenario names to run (see Scenarios); empty runs all. Baselines always run.
	// Profiles, when set, is a directory that gets one CPU profile per
	// measured window (NN-scenario.pprof), without the set-up before it.
	Profiles string
	// IMR, when set, is the path of an imr binary (im_service's router):
	// the gateway and burst scenarios then put the same load through imr
	// first, into the same Redis, for rows to compare in one run.
	IMR string
	// LanesApart runs the roles of the drop-in scenarios as docs/lanes.md
	// deploys them apart: presence and the online lane's fanout in
	// processes of their own, the bulk lane's fanout and the pusher in
	// two more at nice 10.
	LanesApart bool
	Out        io.Writer
}

// Result is one row of the table.
type Result struct {
	Scenario  string  `json:"scenario"`
	Events    int     `json:"events"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"events_per_second"`
	Baseline  string  `json:"baseline,omitempty"`
	Ratio     float64 `json:"ratio_to_baseline,omitempty"`
	P50       float64 `json:"p50_seconds,omitempty"`
	P99       float64 `json:"p99_seconds,omitempty"`
	P999      float64 `json:"p999_seconds,omitempty"`
	CPUPerMEv float64 `json:"cpu_seconds_per_million_events"`
	RedisCPU  float64 `json:"redis_cpu_seconds_per_million_events"` // the part of CPUPerMEv spent by redis-server
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// RedisBytesPer is Redis memory grown per event (memory scenario:
	// per present user, per queued push entry).
	RedisBytesPer float64 `json:"redis_bytes_per_event,omitempty"`
	Lost          int     `json:"lost"`
	// ProduceP99 is, in the noisy scenario, the p99 produce latency of
	// app 7's own records (ts to acknowledged): the part of its delay
	// spent before any router code runs.
	ProduceP99 float64 `json:"produce_p99_seconds,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// Bench runs scenarios against one Kafka and one Redis.
type Bench struct {
	cfg      config.Config
	o        Options
	conn     *kafkax.Conn
	rc       redis.UniversalClient
	redisPID int
	seq      int
	profiles int // CPU profiles written
	children int // child processes started
	results  []Result
	base     map[string]float64
}

// New prepares a bench against cfg's Kafka and Redis; redisPID (0 when
// unknown) adds redis-server's CPU and memory to the figures.
func New(cfg config.Config, rc redis.UniversalClient, redisPID int, o Options) (*Bench, error) {
	if o.Events <= 0 {
		o.Events = 1_000_000
	}
	if o.Latency <= 0 {
		o.Latency = 60 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 20_000
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.OnlineRate <= 0 {
		o.OnlineRate = 1000
	}
	if o.OnlineFor <= 0 {
		o.OnlineFor = 20 * time.Second
	}
	conn, err := kafkax.NewConn(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	cfg.Log.Level = "error"
	cfg.Admin.Listen = ""
	return &Bench{cfg: cfg, o: o, conn: conn, rc: rc, redisPID: redisPID, base: map[string]float64{}}, nil
}

// scenario gives each run fresh topics and consumer groups. It first
// deletes the previous scenario's topics and returns their memory (the
// embedded broker keeps every record in this process), and resets the
// process's peak RSS, so each row's figures are its own.
func (b *Bench) scenario(name string) config.Config {
	if b.seq > 0 {
		b.dropTopics("bench" + strconv.Itoa(b.seq) + ".")
	}
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // Linux: reset VmHWM; elsewhere the peak is the run's
	b.seq++
	c := b.cfg
	p := "bench" + strconv.Itoa(b.seq) + "."
	t := &c.Kafka.Topics
	oneLane := t.OneLane()
	t.Presence, t.Publish, t.Bulk, t.Groups, t.Push, t.DLQ, t.DeliverPrefix = p+"presence", p+"publish", p+"publish.bulk", p+"groups", p+"push", p+"dlq", p+"deliver."
	t.Spill = p + "publish.spill"
	if oneLane { // --kafka.topics.bulk set to the publish topic: measure without lanes
		t.Bulk = t.Publish
	}
	c.Presence.Group, c.Groups.Group, c.Fanout.Group, c.Pusher.Group = p+"presence", p+"groups", p+"fanout", p+"pusher"
	fmt.Fprintf(b.o.Out, "\n== %s\n", name)
	return c
}

// dropTopics deletes the topics whose names start with prefix (best
// effort: a failure only leaves memory in use).
func (b *Bench) dropTopics(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := b.conn.Client().Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		fmt.Fprintf(b.o.Out, "   (could not list topics to delete: %v)\n", err)
		return
	}
	var names []string
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Name, prefix) {
			names = append(names, t.Name)
		}
	}
	if len(names) == 0 {
		return
	}
	if _, err := b.conn.Client().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: names}); err != nil {
		fmt.Fprintf(b.o.Out, "   (could not delete %d topics: %v)\n", len(names), err)
	}
}

// start runs the named stages until the returned stop is called.
func (b *Bench) start(ctx context.Context, cfg config.Config, stages ...string) (*role.Env, func(), error) {
	env, err := role.Setup(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	runs, err := env.Stages(stages...)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = env.Run(rctx, runs...); close(done) }()
	return env, func() { cancel(); <-done; env.Close() }, nil
}

// produce writes records as fast as the broker takes them.
func (b *Bench) produce(ctx context.Context, topic string, n int, record func(i int) kafka.Message) error {
	if err := b.conn.EnsureTopics(ctx, b.cfg.Kafka.ReplicationFactor, map[string]int{topic: b.cfg.Kafka.Partitions}); err != nil {
		return err
	}
	w := b.conn.NewWriter(b.cfg.Kafka, topic)
	w.BatchSize = 10_000
	w.BatchTimeout = 5 * time.Millisecond
	defer w.Close()
	batch := make([]kafka.Message, 0, 50_000)
	for i := 0; i < n; i++ {
		batch = append(batch, record(i))
		if len(batch) == cap(batch) || i == n-1 {
			if err := kafkax.Write(ctx, w, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// waitLag waits until group has consumed all of topic; it prints progress.
func (b *Bench) waitLag(ctx context.Context, group, topic string, total int) error {
	last := time.Now()
	for {
		lag, err := b.conn.Lag(ctx, group, topic)
		if err == nil {
			sum := int64(0)
			for _, l := range lag {
				sum += l
			}
			if sum == 0 && len(lag) > 0 {
				return nil
			}
			if time.Since(last) > 2*time.Second {
				fmt.Fprintf(b.o.Out, "   %d of %d left\n", sum, total)
				last = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// meter samples CPU and memory around a scenario.
type meter struct {
	start    time.Time
	cpu0     float64
	redisPID int
	redis0   float64
	prof     *os.File // the CPU profile of this window, when Options.Profiles is set
}

func cpuSeconds(pid int) float64 {
	if pid == 0 {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func peakRSSMB(pid int) float64 {
	p := "/proc/self/status"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, _ := os.ReadFile(p)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func (b *Bench) meter() *meter {
	m := &meter{redisPID: b.redisPID}
	if b.o.Profiles != "" {
		f, err := os.CreateTemp(b.o.Profiles, "window-*.pprof")
		if err == nil && pprof.StartCPUProfile(f) == nil {
			m.prof = f
		} else if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	m.start, m.cpu0, m.redis0 = time.Now(), cpuSeconds(0), cpuSeconds(b.redisPID)
	return m
}

// stopProfile ends m's profile and names it after the scenario.
func (b *Bench) stopProfile(m *meter, scenario string) {
	if m.prof == nil {
		return
	}
	pprof.StopCPUProfile()
	m.prof.Close()
	slug := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(scenario))
	b.profiles++
	name := filepath.Join(b.o.Profiles, fmt.Sprintf("%02d-%s.pprof", b.profiles, slug))
	if err := os.Rename(m.prof.Name(), name); err == nil {
		fmt.Fprintf(b.o.Out, "   profile: %s\n", name)
	}
}

// record adds a row measured by m.
func (b *Bench) record(m *meter, r Result) { b.add(b.measure(m, r)) }

// add prints and keeps a measured result.
func (b *Bench) add(r Result) {
	fmt.Fprintf(b.o.Out, "   %d events in %.2fs: %.0f/s\n", r.Events, r.Seconds, r.PerSecond)
	b.results = append(b.results, r)
}

// measure completes r with what m saw.
func (b *Bench) measure(m *meter, r Result) Result {
	r.Seconds = time.Since(m.start).Seconds()
	b.stopProfile(m, r.Scenario)
	if r.PerSecond == 0 {
		r.PerSecond = float64(r.Events) / r.Seconds
	}
	cpu := cpuSeconds(0) - m.cpu0
	if b.redisPID != 0 {
		rcpu := cpuSeconds(b.redisPID) - m.redis0
		cpu += rcpu
		r.RedisCPU = rcpu / float64(r.Events) * 1e6
	}
	r.CPUPerMEv = cpu / float64(r.Events) * 1e6
	r.PeakRSSMB = peakRSSMB(0)
	if base, ok := b.base[r.Baseline]; ok && base > 0 {
		r.Ratio = r.PerSecond / base
	}
	return r
}

// Report prints the table and writes the JSON file.
func (b *Bench) Report() error {
	tw := tabwriter.NewWriter(b.o.Out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tevents\tseconds\tevents/s\tratio\tbaseline\tp50 ms\tp99 ms\tp999 ms\tCPU s/M ev\tof which Redis\tpeak RSS MB\tlost\t")
	for _, r := range b.results {
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.3f", r.Ratio)
		}
		ms := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", v*1000)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.0f\t%d\t\n", r.Scenario, r.Events, r.Seconds, r.PerSecond,
			ratio, r.Baseline, ms(r.P50), ms(r.P99), ms(r.P999), r.CPUPerMEv, r.RedisCPU, r.PeakRSSMB, r.Lost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range b.results {
		if r.Note != "" {
			fmt.Fprintf(b.o.Out, "%s: %s\n", r.Scenario, r.Note)
		}
	}
	if b.o.JSON == "" {
		return nil
	}
	data, _ := json.MarshalIndent(b.results, "", "  ")
	return os.WriteFile(b.o.JSON, data, 0o644)
}

// Scenarios names the scenarios in the order Run runs them.
var Scenarios = []string{"pusher", "offline", "peers", "groups", "biggroup", "churn", "latency", "online", "burst", "gateway", "noisy", "noisydirect", "broadcast", "trace", "memory"}

// Run runs the baselines and the chosen scenarios, then prints the table.
func (b *Bench) Run(ctx context.Context) error {
	run := map[string]func(context.Context) error{
		"pusher": b.PusherAlone, "offline": b.OfflinePath, "peers": b.OnlinePeers,
		"groups": b.Groups, "biggroup": b.BigGroup, "churn": b.PresenceChurn, "latency": b.Latency, "noisy": b.Noisy, "noisydirect": b.NoisyDirect, "broadcast": b.Broadcast, "trace": b.Trace, "memory": b.Memory,
		"online": b.OnlineLatency, "burst": b.OnlineUnderBurst, "gateway": b.GatewayPath,
	}
	only := map[string]bool{}
	for _, name := range b.o.Only {
		if run[name] == nil {
			return fmt.Errorf("bench: unknown scenario %q (have %s)", name, strings.Join(Scenarios, ", "))
		}
		only[name] = true
	}
	if err := b.Baselines(ctx); err != nil {
		return err
	}
	for _, name := range Scenarios {
		if len(only) > 0 && !only[name] {
			continue
		}
		if err := run[name](ctx); err != nil {
			return err
		}
	}
	if err := b.RPUSHAgain(ctx); err != nil {
		return err
	}
	fmt.Fprintln(b.o.Out)
	return b.Report()
}
