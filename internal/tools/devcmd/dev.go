// Package devcmd is `imstream dev`: it runs imstream on one machine with no set-up: an embedded
// Kafka broker and Redis, every role that exists, and sample traffic, with
// a status line every few seconds showing what flows where.
package devcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/imsim"
	imstatus "github.com/imstream/imstream/internal/tools/status"
	"github.com/imstream/imstream/internal/wiring/role"
)

// Options configures Run.
type Options struct {
	DataDir   string        // Kafka and Redis data; "" keeps everything in memory/temp
	KafkaPort int           // 0 picks a free port
	RedisPort int           // 0 picks a free port
	Rate      int           // sample events per second; 0 disables the traffic
	Gateway   bool          // also run the gateway on cfg.Gateway.Listen
	Every     time.Duration // status interval (default 3s)
	Out       io.Writer     // status output (default stdout)
}

// Stack is a running embedded stack: broker, Redis, and the process
// environment with the roles built (not yet running).
type Stack struct {
	Kafka *embedded.Kafka
	Redis *embedded.Redis
	Env   *role.Env
	Cfg   config.Config
	Roles []string
	Runs  []func(context.Context) error
}

// Close stops what Up started.
func (s *Stack) Close() {
	s.Env.Close()
	_ = s.Redis.Close()
	s.Kafka.Close()
}

// Up starts the embedded broker and Redis and builds the roles (every
// consumer role, and the gateway when o.Gateway) against them.
func Up(ctx context.Context, cfg config.Config, o Options) (*Stack, error) {
	kdir, rdir := "", ""
	if o.DataDir != "" {
		kdir, rdir = filepath.Join(o.DataDir, "kafka"), filepath.Join(o.DataDir, "redis")
		for _, d := range []string{kdir, rdir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
	}
	// Ports taken on this machine (another Kafka, node_exporter on 9100, …)
	// are replaced by free ones; the banner prints what was chosen.
	if o.KafkaPort != 0 {
		addr, moved, err := embedded.Available("127.0.0.1:" + strconv.Itoa(o.KafkaPort))
		if err != nil {
			return nil, err
		}
		if moved {
			fmt.Fprintf(os.Stderr, "port %d is taken: the embedded Kafka listens on %s\n", o.KafkaPort, addr)
			o.KafkaPort, _ = strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
		}
	}
	for _, l := range []*string{&cfg.Admin.Listen, &cfg.Gateway.Listen} {
		if *l == "" || (l == &cfg.Gateway.Listen && !o.Gateway) {
			continue
		}
		addr, moved, err := embedded.Available(*l)
		if err != nil {
			return nil, err
		}
		if moved {
			fmt.Fprintf(os.Stderr, "%s is taken: using %s instead\n", *l, addr)
			*l = addr
		}
	}
	k, err := embedded.StartKafka(embedded.KafkaOptions{Port: o.KafkaPort, DataDir: kdir, Partitions: cfg.Kafka.Partitions})
	if err != nil {
		return nil, err
	}
	r, err := embedded.StartRedis(embedded.RedisOptions{Port: o.RedisPort, Dir: rdir, Persist: rdir != ""})
	if errors.Is(err, embedded.ErrNoRedisServer) {
		fmt.Fprintf(os.Stderr, "\n%s\nWARNING: %v\nWARNING: falling back to an IN-PROCESS Redis (miniredis): nothing persists, and it is\nWARNING: not the real thing. Install redis-server for a faithful dev stack.\n%s\n\n",
			strings.Repeat("!", 78), err, strings.Repeat("!", 78))
		r, err = embedded.StartMiniRedis()
	}
	if err != nil {
		k.Close()
		return nil, err
	}
	cfg.Kafka.Brokers = []string{k.Addr}
	cfg.Redis.Addrs = []string{r.Addr}
	cfg.Redis.Cluster = false
	env, err := role.Setup(ctx, cfg)
	if err != nil {
		_ = r.Close()
		k.Close()
		return nil, err
	}
	s := &Stack{Kafka: k, Redis: r, Env: env, Cfg: cfg, Roles: role.Roles}
	if o.Gateway {
		s.Roles = append(s.Roles[:len(s.Roles):len(s.Roles)], "gateway")
	}
	if s.Runs, err = env.Stages(s.Roles...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Run starts the stack and the roles and blocks until ctx ends.
func Run(ctx context.Context, cfg config.Config, o Options) error {
	if o.Every <= 0 {
		o.Every = 3 * time.Second
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	st, err := Up(ctx, cfg, o)
	if err != nil {
		return err
	}
	defer st.Close()
	k, r, env, cfg := st.Kafka, st.Redis, st.Env, st.Cfg
	runs := st.Runs
	admin, online := "(disabled)", ""
	if env.Admin != nil {
		admin = "http://" + env.Admin.Addr() + "/metrics"
		online = "\n  online  curl 'http://" + env.Admin.Addr() + "/online?appid=7&uid=1'"
	}
	redisKind := "redis-server"
	if r.InProc {
		redisKind = "in-process miniredis"
	}
	fmt.Fprintf(o.Out, "imstream dev\n  kafka   %s  (embedded kfake; try: kcat -b %s -L)\n  redis   %s  (%s; try: redis-cli -p %s lrange push_queue 0 -1)\n  admin   %s%s\n  roles   %s\n",
		k.Addr, k.Addr, r.Addr, redisKind, r.Addr[strings.LastIndex(r.Addr, ":")+1:], admin, online, strings.Join(st.Roles, ", "))
	if o.Gateway {
		fmt.Fprintf(o.Out, "  gateway %s  (imr protocol: point an im_service IM server's route_addrs here)\n", cfg.Gateway.Listen)
	}
	var sm *imsim.Sim
	if o.Rate > 0 {
		sm = imsim.New(cfg.Kafka, imsim.Options{Rate: o.Rate})
		fmt.Fprintf(o.Out, "  traffic 3 simulated IM servers (sim-1..3), 150 users, 10 groups, 3 rooms, ~%d msgs/s\n", o.Rate)
		runs = append(runs, sm.Run)
	}
	fmt.Fprintln(o.Out)
	runs = append(runs, func(ctx context.Context) error { return status(ctx, env, sm, o) })
	slog.Info("dev stack up", "kafka", k.Addr, "redis", r.Addr)
	return env.Run(ctx, runs...)
}

// status prints what flows every o.Every: messages the simulated servers
// sent, deliveries they received, the push lists' lengths, and from the
// roles' metrics the rates per stage, lag and end-to-end p99.
func status(ctx context.Context, env *role.Env, sm *imsim.Sim, o Options) error {
	rc := env.Redis
	prev := map[string]int64{}
	gather := func() imstatus.Sample {
		mfs, _ := env.Registry.Gather()
		return imstatus.FromFamilies(time.Now(), mfs)
	}
	last := gather()
	tick.Every(ctx, o.Every, func() {
		cur := gather()
		for _, l := range imstatus.Lines(last, cur) {
			fmt.Fprintf(o.Out, "%s  %s\n", time.Now().Format("15:04:05"), l)
		}
		last = cur
		lists, err := pushLists(ctx, rc)
		if err != nil {
			fmt.Fprintf(o.Out, "%s  redis: %v\n", time.Now().Format("15:04:05"), err)
			return
		}
		var parts []string
		for _, l := range lists {
			n := rc.LLen(ctx, l).Val()
			parts = append(parts, fmt.Sprintf("%s=%d (+%d)", l, n, n-prev[l]))
			prev[l] = n
		}
		if len(parts) == 0 {
			parts = []string{"no push entries yet"}
		}
		now := time.Now().Format("15:04:05")
		if sm != nil {
			st := sm.Stats()
			fmt.Fprintf(o.Out, "%s  sent: %s | online users %d | delivered: %s (repeats dropped %d)\n",
				now, kv(st.Sent), st.Online, kv(st.Delivered), st.Repeats)
		}
		fmt.Fprintf(o.Out, "%s  push lists: %s\n", now, strings.Join(parts, "  "))
	})
	return nil
}

func pushLists(ctx context.Context, rc redis.UniversalClient) ([]string, error) {
	var lists []string
	iter := rc.Scan(ctx, 0, "*push_queue*", 1000).Iterator()
	for iter.Next(ctx) {
		if k := iter.Val(); !strings.Contains(k, "{") {
			lists = append(lists, k)
		}
	}
	sort.Strings(lists)
	return lists, iter.Err()
}

func kv(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
