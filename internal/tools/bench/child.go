package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/embedded"
)

// child is a role running as a process of this binary.
type child struct {
	cmd   *exec.Cmd
	log   string
	admin string // its admin address (/metrics)
	done  chan struct{}
}

// cpu returns the process's CPU seconds, also after it exited.
func (c *child) cpu() float64 {
	select {
	case <-c.done:
		return (c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()).Seconds()
	default:
		return cpuSeconds(c.pid())
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	_ = os.Remove(c.log)
}

// startChild runs `imstream <role>` against this bench's Kafka, Redis,
// topics and groups. Its output goes to a log file whose tail is shown when
// it exits early.
func (b *Bench) startChild(cfg config.Config, role string, extra ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := embedded.FreePort()
	if err != nil {
		return nil, err
	}
	t := cfg.Kafka.Topics
	args := []string{role,
		"--kafka.brokers", cfg.Kafka.Brokers[0], "--redis.addrs", cfg.Redis.Addrs[0],
		"--kafka.partitions", strconv.Itoa(cfg.Kafka.Partitions),
		"--kafka.topics.presence", t.Presence, "--kafka.topics.publish", t.Publish, "--kafka.topics.bulk", t.Bulk, "--kafka.topics.groups", t.Groups,
		"--kafka.topics.push", t.Push, "--kafka.topics.dlq", t.DLQ, "--kafka.topics.deliver_prefix", t.DeliverPrefix,
		"--presence.group", cfg.Presence.Group, "--groups.group", cfg.Groups.Group,
		"--fanout.group", cfg.Fanout.Group, "--pusher.group", cfg.Pusher.Group,
		"--fanout.batch_push_jobs=" + strconv.FormatBool(cfg.Fanout.BatchPushJobs), "--kafka.internal_format", cfg.Kafka.InternalFormat, "--kafka.compression", cfg.Kafka.Compression,
		"--presence.lease", "10m", // no heartbeats in this scenario
		"--log.level", "warn", "--admin.listen", "127.0.0.1:" + strconv.Itoa(port)}
	if b.o.Profiles != "" {
		args = append(args, "--admin.pprof")
	}
	args = append(args, extra...)
	return b.spawn(role, exe, args, "127.0.0.1:"+strconv.Itoa(port))
}

// spawn runs exe with args as a child named name (admin: its metrics
// address, "" when it has none). Its output goes to a log file whose tail is
// shown when it exits early.
func (b *Bench) spawn(name, exe string, args []string, admin string) (*child, error) {
	b.children++
	log := filepath.Join(os.TempDir(), fmt.Sprintf("imstream-bench-%s-%d-%d.log", name, os.Getpid(), b.children))
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	c := &child{cmd: cmd, log: log, admin: admin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	go func() {
		<-c.done
		if tail, err := os.ReadFile(log); err == nil && cmd.ProcessState != nil && !cmd.ProcessState.Success() &&
			cmd.ProcessState.ExitCode() != -1 { // -1: killed by the bench
			fmt.Fprintf(b.o.Out, "   %s exited: %s\n%s\n", name, cmd.ProcessState, tail[max(0, len(tail)-4000):])
		}
	}()
	return c, nil
}

// profileChildren, when Options.Profiles is set, fetches a CPU profile of
// each named child over its admin port (/debug/pprof/profile), from after
// delay for d, into the profiles directory as <prefix>-<name>.pprof. The
// returned wait blocks until they are written.
func (b *Bench) profileChildren(ctx context.Context, prefix string, delay, d time.Duration, children map[string]*child) (wait func()) {
	if b.o.Profiles == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for name, c := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.admin, int(d.Seconds()))
			resp, err := http.Get(url)
			if err != nil {
				fmt.Fprintf(b.o.Out, "   profile of %s: %v\n", name, err)
				return
			}
			defer resp.Body.Close()
			out := filepath.Join(b.o.Profiles, prefix+"-"+name+".pprof")
			f, err := os.Create(out)
			if err != nil {
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, resp.Body); err == nil {
				fmt.Fprintf(b.o.Out, "   profile of %s: %s\n", name, out)
			}
		}()
	}
	return wg.Wait
}
