package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/schemas"
)

// memoryUsers is how many users are present in the memory scenario.
const memoryUsers = 1_000_000

// Memory: each consumer role as its own process of this binary, with 1M
// users present: presence applies their subscribes, the fanout routes
// messages to them (RT to present users → deliver topics, MSG_PUSH to
// offline ones → imr.push), the pusher writes the offline entries. It
// records each process's peak RSS (VmHWM) and CPU.
func (b *Bench) Memory(ctx context.Context) error {
	const servers = 8
	msgs := max(b.o.Events/5, 1000)
	cfg := b.scenario(fmt.Sprintf("memory: %d present users on %d servers, %d messages; presence, fanout and pusher as separate processes", memoryUsers, servers, msgs))
	if err := b.flush(ctx); err != nil {
		return err
	}
	t := cfg.Kafka.Topics
	if err := b.memoryLoad(ctx, t, servers, msgs); err != nil {
		return err
	}
	var mem [3]int64 // Redis used_memory: empty, with presence, with the push entries
	mem[0] = b.redisMemory(ctx)
	start := time.Now()
	procs := map[string]*child{}
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	// presence first, so the fanout routes against the full presence state.
	for _, role := range []string{"presence", "fanout", "pusher"} {
		p, err := b.startChild(cfg, role)
		if err != nil {
			return err
		}
		procs[role] = p
		if role == "presence" {
			if err := b.waitLag(ctx, cfg.Presence.Group, t.Presence, servers+memoryUsers); err != nil {
				return err
			}
			mem[1] = b.redisMemory(ctx)
		}
	}
	if err := b.waitLag(ctx, cfg.Fanout.Group, t.Publish, msgs); err != nil {
		return err
	}
	if err := b.waitLag(ctx, cfg.Pusher.Group, t.Push, msgs/2); err != nil {
		return err
	}
	got, err := b.rc.LLen(ctx, "push_queue").Result()
	if err != nil {
		return err
	}
	mem[2] = b.redisMemory(ctx)
	b.memoryResults(procs, time.Since(start), servers, msgs, int(got))
	n := len(b.results)
	b.results[n-3].RedisBytesPer = float64(mem[1]-mem[0]) / memoryUsers
	b.results[n-1].RedisBytesPer = float64(mem[2]-mem[1]) / float64(max(got, 1))
	fmt.Fprintf(b.o.Out, "   Redis: %.0f bytes per present user, %.0f bytes per queued push entry\n", b.results[n-3].RedisBytesPer, b.results[n-1].RedisBytesPer)
	return nil
}

// redisMemory is Redis's used_memory in bytes (0 when it cannot be read).
func (b *Bench) redisMemory(ctx context.Context) int64 {
	info, err := b.rc.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// memoryLoad produces the scenario's input: servers up, memoryUsers users
// subscribed, then msgs messages, half RT to present users and half
// MSG_PUSH to offline ones.
func (b *Bench) memoryLoad(ctx context.Context, t config.Topics, servers, msgs int) error {
	on := true
	if err := b.produce(ctx, t.Presence, servers+memoryUsers, func(i int) kafka.Message {
		ev := &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "s" + strconv.Itoa(i%servers), AppID: app}, Epoch: 1}
		key := ingest.ServerKey(ev.Server)
		if i >= servers {
			u := int64(i - servers + 1)
			ev.Type, ev.UID, ev.Online = schemas.TypeSubscribe, u, &on
			key = ingest.UserKey(app, u)
		}
		v, _ := json.Marshal(ev)
		return kafka.Message{Key: []byte(key), Value: v}
	}); err != nil {
		return err
	}
	if err := b.produce(ctx, t.Publish, msgs, func(i int) kafka.Message {
		if i%2 == 1 { // MSG_PUSH to an offline user
			return kafka.Message{Key: []byte(ingest.UserKey(app, offline(i))), Value: pushEvent(i, "origin")}
		}
		return publishRecord(schemas.TypePublish, int64(1+(i*7919)%memoryUsers), schemas.Message{Cmd: schemas.CmdRT, Content: "typing"})
	}); err != nil {
		return err
	}
	return nil
}

// memoryResults records each role process's peak RSS and CPU.
func (b *Bench) memoryResults(procs map[string]*child, took time.Duration, servers, msgs, got int) {
	for _, role := range []string{"presence", "fanout", "pusher"} {
		p := procs[role]
		r := Result{Scenario: "memory: " + role + " process", Seconds: took.Seconds(), PeakRSSMB: peakRSSMB(p.pid())}
		switch role {
		case "presence":
			r.Events = servers + memoryUsers
			r.Note = fmt.Sprintf("applied %d presence events", r.Events)
		case "fanout":
			r.Events = msgs
			r.Note = fmt.Sprintf("routed %d messages against %d present users", msgs, memoryUsers)
		case "pusher":
			r.Events = msgs / 2
			r.Lost = r.Events - got
			r.Note = fmt.Sprintf("wrote %d offline entries", got)
		}
		r.PerSecond = float64(r.Events) / r.Seconds // the whole scenario's time: not a throughput figure
		r.CPUPerMEv = cpuSeconds(p.pid()) / float64(r.Events) * 1e6
		fmt.Fprintf(b.o.Out, "   %s: peak RSS %.0f MB\n", role, r.PeakRSSMB)
		b.results = append(b.results, r)
	}
}
