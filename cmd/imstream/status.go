package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	dto "github.com/prometheus/client_model/go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/status"
)

// statusFlags declares status's flags and returns its run: a terminal view
// of a running deployment from the roles' admin endpoints and Kafka.
func statusFlags(fs *pflag.FlagSet) runFunc {
	admins := fs.StringSlice("admin", []string{"127.0.0.1:9100"}, "admin addresses (host:port) of the processes to ask")
	every := fs.Duration("interval", 5*time.Second, "rates and p99 are measured over this interval")
	watch := fs.Bool("watch", false, "repeat every interval until interrupted")
	return func(ctx context.Context, cfg config.Config) error {
		return runStatus(ctx, cfg, *admins, *every, *watch)
	}
}

func runStatus(ctx context.Context, cfg config.Config, admins []string, every time.Duration, watch bool) error {
	hc := &http.Client{Timeout: 3 * time.Second}
	conn, err := kafkax.NewConn(cfg.Kafka)
	if err != nil {
		return err
	}
	answered := 0
	scrape := func() status.Sample {
		var procs [][]*dto.MetricFamily
		for _, a := range admins {
			if mfs, err := status.Scrape(hc, a); err == nil {
				procs = append(procs, mfs)
			}
		}
		answered = len(procs)
		return status.FromFamilies(time.Now(), procs...)
	}
	prev := scrape()
	if answered == 0 && !watch {
		return fmt.Errorf("no imstream process answered at %s", strings.Join(admins, ", "))
	}
	// With --watch on a terminal each screen replaces the last; piped, a
	// screen is printed only when something but the time changed.
	tty := false
	if fi, err := os.Stdout.Stat(); err == nil {
		tty = fi.Mode()&os.ModeCharDevice != 0
	}
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
		cur := scrape()
		var body []string
		for _, a := range admins {
			body = append(body, fmt.Sprintf("ready   %s: %s", a, readiness(hc, a)))
		}
		body = append(body, status.Lines(prev, cur)...)
		if n, err := recent(ctx, conn, cfg.Kafka.Topics.DLQ, time.Minute); err != nil {
			body = append(body, fmt.Sprintf("dead letters in the last minute: unknown (%v)", err))
		} else {
			body = append(body, fmt.Sprintf("dead letters in the last minute: %d (%s)", n, cfg.Kafka.Topics.DLQ))
		}
		prev = cur
		text := strings.Join(body, "\n")
		if watch && !tty && text == last {
			continue
		}
		last = text
		if watch && tty {
			fmt.Print("\033[H\033[2J") // home, clear screen
		}
		fmt.Printf("imstream status %s (%d processes, over %s)\n%s\n", cur.At.Format("15:04:05"), len(admins), every, text)
		if !watch {
			return nil
		}
		if !tty {
			fmt.Println()
		}
	}
}

// readiness is a process's /readyz answer in one line.
func readiness(hc *http.Client, addr string) string {
	resp, err := hc.Get("http://" + addr + "/readyz")
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return "ready"
	}
	return fmt.Sprintf("NOT READY (%d): %s", resp.StatusCode, strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "; "))
}

// recent counts the records written to topic during the last d: per
// partition, the end offset minus the first offset at or after now-d.
func recent(ctx context.Context, conn *kafkax.Conn, topic string, d time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := conn.Partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	since := time.Now().Add(-d)
	var total int64
	for p := range n {
		from, end, err := conn.OffsetsAt(ctx, topic, p, since)
		if err != nil {
			return 0, err
		}
		if from >= 0 && end > from {
			total += end - from
		}
	}
	return total, nil
}

// readyFlags declares ready's flags and returns its run: exit 0 when the
// process at --admin answers /readyz with 200, 1 otherwise, for container
// healthchecks in images without a shell or curl.
func readyFlags(fs *pflag.FlagSet) runFunc {
	admin := fs.String("admin", "127.0.0.1:9100", "admin address (host:port) of the process to ask")
	return func(ctx context.Context, cfg config.Config) error {
		if r := readiness(&http.Client{Timeout: 3 * time.Second}, *admin); r != "ready" {
			return fmt.Errorf("%s: %s", *admin, r)
		}
		return nil
	}
}
