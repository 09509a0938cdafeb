package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/dlq"
)

// dlqCmd is `imstream dlq list|show|redrive`: the dead-letter topic, read
// and re-driven (docs/runbook.md).
func dlqCmd() *cobra.Command {
	parent := &cobra.Command{Use: "dlq", Short: "List, show and re-drive dead letters (imr.dlq)",
		Long: "List, show and re-drive dead letters (imr.dlq). Filters: --reason, --topic (the source topic),\n" +
			"--since/--until, --appid, --count. docs/runbook.md says when to re-drive."}
	sub := func(use, short string, flags func(fs *pflag.FlagSet, f *dlqFilter) runFunc) {
		c := &cobra.Command{Use: use, Short: short, Long: short + ".\n\n" + configHelp, Args: cobra.NoArgs}
		fs := c.Flags()
		f := dlqFilterFlags(fs)
		run := flags(fs, f)
		path := configFlags(fs)
		c.RunE = func(c *cobra.Command, _ []string) error {
			cfg, err := loadConfig(*path, fs)
			if err != nil {
				return usageError{err}
			}
			return run(c.Context(), cfg)
		}
		parent.AddCommand(c)
	}
	sub("list", "Summarise dead letters by reason and source topic", func(_ *pflag.FlagSet, f *dlqFilter) runFunc {
		return func(ctx context.Context, cfg config.Config) error { return runDLQList(ctx, cfg, f, os.Stdout) }
	})
	sub("show", "Print dead letters with their headers", func(fs *pflag.FlagSet, f *dlqFilter) runFunc {
		asJSON := fs.Bool("json", false, "one JSON object per line")
		return func(ctx context.Context, cfg config.Config) error { return runDLQShow(ctx, cfg, f, *asJSON, os.Stdout) }
	})
	sub("redrive", "Write dead letters back to their source topic (safe to run twice)", func(fs *pflag.FlagSet, f *dlqFilter) runFunc {
		var o dlq.Options
		fs.StringVar(&o.To, "to", "", "write to this topic instead of each letter's source topic")
		fs.BoolVar(&o.Rekey, "rekey", false, "key each record as its body calls for (records a producer keyed wrongly)")
		fs.BoolVar(&o.DryRun, "dry-run", false, "report what would be re-driven, write nothing")
		return func(ctx context.Context, cfg config.Config) error { return runDLQRedrive(ctx, cfg, f, o, os.Stdout) }
	})
	return parent
}

// dlqFilter is the filter flags' values.
type dlqFilter struct {
	reason, topic string
	since         time.Duration
	from, to      string
	appid         int64
	count         int
}

func dlqFilterFlags(fs *pflag.FlagSet) *dlqFilter {
	f := &dlqFilter{}
	fs.StringVar(&f.reason, "reason", "", "only this reason code (oversize, key_mismatch, invalid_value, ...)")
	fs.StringVar(&f.topic, "topic", "", "only dead letters read from this topic (their src_topic)")
	fs.DurationVar(&f.since, "since", 0, "only dead letters written in this last while (e.g. 1h)")
	fs.StringVar(&f.from, "from", "", "only dead letters written at or after this time (RFC 3339)")
	fs.StringVar(&f.to, "until", "", "only dead letters written before this time (RFC 3339)")
	fs.Int64Var(&f.appid, "appid", 0, "only records of this app")
	fs.IntVar(&f.count, "count", 0, "at most this many (0: all)")
	return f
}

func (f *dlqFilter) filter(now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{Reason: f.reason, Topic: f.topic, AppID: f.appid, Count: f.count}
	if f.since > 0 {
		out.Since = now.Add(-f.since)
	}
	for _, t := range []struct {
		s   string
		dst *time.Time
	}{{f.from, &out.Since}, {f.to, &out.Until}} {
		if t.s == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.s)
		if err != nil {
			return out, usageError{fmt.Errorf("want an RFC 3339 time (2026-12-07T10:00:00Z): %w", err)}
		}
		*t.dst = v
	}
	return out, nil
}

func readDLQ(ctx context.Context, cfg config.Config, f *dlqFilter) (*kafkax.Conn, []dlq.Letter, error) {
	flt, err := f.filter(time.Now())
	if err != nil {
		return nil, nil, err
	}
	conn, err := kafkax.NewConn(cfg.Kafka)
	if err != nil {
		return nil, nil, err
	}
	letters, err := dlq.Read(ctx, conn, cfg.Kafka.Topics.DLQ, flt)
	return conn, letters, err
}

func runDLQList(ctx context.Context, cfg config.Config, f *dlqFilter, out io.Writer) error {
	_, letters, err := readDLQ(ctx, cfg, f)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d dead letters in %s\n", len(letters), cfg.Kafka.Topics.DLQ)
	for _, s := range dlq.Summarize(letters) {
		fmt.Fprintf(out, "%8d  %-16s from %-24s %s .. %s\n", s.Count, s.Code, s.Topic, s.First.UTC().Format(time.RFC3339), s.Last.UTC().Format(time.RFC3339))
	}
	return nil
}

func runDLQShow(ctx context.Context, cfg config.Config, f *dlqFilter, asJSON bool, out io.Writer) error {
	_, letters, err := readDLQ(ctx, cfg, f)
	if err != nil {
		return err
	}
	for _, l := range letters {
		hs := map[string]string{}
		for _, h := range l.Headers {
			hs[h.Key] = string(h.Value)
		}
		if asJSON {
			b, _ := json.Marshal(map[string]any{"partition": l.Partition, "offset": l.Offset, "time": l.Time.UTC(),
				"key": string(l.Key), "value": printable(l.Value), "headers": hs})
			fmt.Fprintln(out, string(b))
			continue
		}
		fmt.Fprintf(out, "%s  %s  key %q\n", l.Coordinates(cfg.Kafka.Topics.DLQ), l.Time.UTC().Format(time.RFC3339Nano), l.Key)
		for _, h := range l.Headers {
			fmt.Fprintf(out, "    %s: %s\n", h.Key, h.Value)
		}
		fmt.Fprintf(out, "    value: %s\n", printable(l.Value))
	}
	return nil
}

// printable is a value as text, or quoted when it is binary.
func printable(v []byte) string {
	for _, c := range v {
		if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
			return strconv.Quote(string(v))
		}
	}
	return string(v)
}

func runDLQRedrive(ctx context.Context, cfg config.Config, f *dlqFilter, o dlq.Options, out io.Writer) error {
	conn, letters, err := readDLQ(ctx, cfg, f)
	if err != nil {
		return err
	}
	rc, err := redisx.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	r := &dlq.Redriver{Conn: conn, Kafka: cfg.Kafka, Ledger: rc, Prefix: cfg.Redis.KeyPrefix, Log: log.Info}
	res, err := r.Redrive(ctx, letters, o)
	verb := "re-driven"
	if o.DryRun {
		verb = "would be re-driven"
	}
	fmt.Fprintf(out, "%d of %d selected dead letters %s (%d records); %d re-driven before, %d truncated, %d not decodable\n",
		res.Redriven, len(letters), verb, res.Written, res.Already, res.Truncated, res.Failed)
	return err
}
