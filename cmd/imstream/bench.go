package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/bench"
	"github.com/imstream/imstream/internal/tools/embedded"
)

// benchFlags declares bench's flags and returns its run.
func benchFlags(fs *pflag.FlagSet) runFunc {
	o := bench.Options{Out: os.Stdout}
	fs.IntVar(&o.Events, "events", 1_000_000, "events of the burst scenarios")
	fs.DurationVar(&o.Latency, "latency", 60*time.Second, "length of the steady-rate latency scenario")
	fs.IntVar(&o.Rate, "rate", 20_000, "events/s of the latency scenario")
	fs.StringVar(&o.JSON, "json", "bench.json", "write the results here as JSON (\"\" skips)")
	external := fs.Bool("external", false, "use the configured Kafka and Redis instead of the embedded ones")
	brokerDir := fs.String("broker-data-dir", "", "the embedded broker keeps its logs in this directory (default: a new temporary one, removed at the end)")
	brokerMem := fs.Bool("broker-in-memory", false, "the embedded broker keeps its logs in memory (kfake's in-memory file system: its growing buffers are copied and page-faulted, costing several times a disk log's CPU)")
	only := fs.String("scenarios", "", "comma-separated scenarios to run after the baselines ("+strings.Join(bench.Scenarios, ",")+"); empty runs all")
	fs.StringVar(&o.Profiles, "profiles", "", "write one CPU profile per measured window into this directory (go tool pprof)")
	fs.StringVar(&o.IMR, "imr-bin", os.Getenv("IMR_BIN"), "an imr binary (im_service's router, `go build ./imr`): the gateway and burst scenarios also run the same load through it, for side-by-side rows (default $IMR_BIN)")
	fs.BoolVar(&o.LanesApart, "lanes-apart", false, "run the drop-in scenarios' roles as docs/lanes.md deploys the lanes apart: presence and the online fanout, then the bulk fanout and the pusher at nice 10, each a process")
	return func(ctx context.Context, cfg config.Config) error {
		if *only != "" {
			o.Only = strings.Split(*only, ",")
		}
		if o.Profiles != "" {
			if err := os.MkdirAll(o.Profiles, 0o755); err != nil {
				return err
			}
		}
		redisPID := 0
		if !*external {
			dir := *brokerDir
			if dir == "" && !*brokerMem {
				tmp, err := os.MkdirTemp("", "imstream-bench-broker-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			k, err := embedded.StartKafka(embedded.KafkaOptions{Partitions: cfg.Kafka.Partitions, DataDir: dir})
			if err != nil {
				return err
			}
			defer k.Close()
			r, err := embedded.StartRedis(embedded.RedisOptions{})
			if errors.Is(err, embedded.ErrNoRedisServer) {
				return fmt.Errorf("%w: the bench measures against a real Redis", err)
			}
			if err != nil {
				return err
			}
			defer r.Close()
			cfg.Kafka.Brokers, cfg.Redis.Addrs, cfg.Redis.Cluster = []string{k.Addr}, []string{r.Addr}, false
			redisPID = r.PID()
			logs := "in memory"
			if dir != "" {
				logs = "logs in " + dir
			}
			fmt.Printf("embedded stack: kafka %s (%s), redis-server %s (pid %d)\n", k.Addr, logs, r.Addr, redisPID)
		}
		rc, err := redisx.New(cfg.Redis)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := bench.New(cfg, rc, redisPID, o)
		if err != nil {
			return err
		}
		return b.Run(ctx)
	}
}
