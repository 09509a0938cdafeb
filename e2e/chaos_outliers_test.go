//go:build chaos

package e2e_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// Faults of the outliers: a record the brokers
// refuse for good, and Redis full for longer than a lease.

func init() {
	faults = append(faults,
		fault{"MESSAGE_TOO_LARGE on 3 produce requests to imr.push, dead letters re-driven", func(c *chaos) time.Duration {
			cl := c.kafka.Cluster()
			push := c.s.cfg.Kafka.Topics.Push
			var refused atomic.Int64
			start := time.Now()
			cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				if refused.Load() >= 3 {
					cl.DropControl()
					return nil, nil, false
				}
				cl.KeepControl()
				r := req.(*kmsg.ProduceRequest)
				if len(r.Topics) == 0 || r.Topics[0].Topic != push {
					return nil, nil, false
				}
				refused.Add(1)
				return respondErr(req, kerr.MessageTooLarge.Code), nil, true
			})
			// Pushes of its own while it waits: in a mixed run the workload
			// may have sent everything already.
			for n := 0; refused.Load() < 3; n++ {
				if time.Since(start) > 2*time.Minute {
					c.t.Fatalf("only %d produce requests to %s refused in 2 minutes", refused.Load(), push)
				}
				content := c.run + "-refuse-" + strconv.Itoa(n)
				to := int64(offBase + 980 + n%10)
				c.want.add(c.want.push, content, to)
				send(func() error {
					return c.ims[n%3].Push(context.Background(), app, []int64{to}, schemas.Message{Cmd: 4, Sender: 1, Receiver: to, Content: content})
				})
				c.sent.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
			// The partitions moved on: the refused records' inputs are in
			// imr.dlq (reason output_refused). Produce them back, once each,
			// as docs/runbook.md says.
			testkit.Eventually(c.t, 2*time.Minute, "the refused inputs dead-lettered", func() bool { return len(c.refusedLetters()) > 0 })
			time.Sleep(2 * time.Second) // letters of the last refused request
			n := c.redrive()
			c.t.Logf("%d inputs dead-lettered as output_refused, re-driven", n)
			return c.progress(start)
		}},
		fault{"Redis full (maxmemory, noeviction) for longer than a lease; RT sent after the lease arrives", func(c *chaos) time.Duration {
			ctx := context.Background()
			mem := testkit.UsedMemory(c.t, c.rc)
			must(c.t, c.rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
			must(c.t, c.rc.ConfigSet(ctx, "maxmemory", strconv.FormatInt(mem/2, 10)).Err())
			if err := c.rc.Set(ctx, "imstream-chaos-probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
				c.t.Fatalf("Redis is not full: SET answered %v", err)
			}
			time.Sleep(c.s.cfg.Presence.Lease + 5*time.Second)
			// Every server still heartbeats, but presence cannot record it:
			// an RT to a connected user must still be delivered. Users
			// 33-50 of s1 are connected and the workload sends them
			// nothing (its RT go to 1-32): while a big workload still runs,
			// its messages to a user of this fault would be sent after
			// these and numbered below them, which the order check would
			// count as reordered.
			for u := int64(33); u <= 50; u++ {
				content := c.run + "-" + strconv.FormatInt(100_000_000+u, 10) // one each: in order
				c.want.add(c.want.delivers["s1"], content, u)
				send(func() error {
					return c.ims[1].Publish(ctx, app, u, schemas.Message{Cmd: 17, Sender: 150, Receiver: u, Content: content}, ingest.Meta{})
				})
				c.sent.Add(1)
			}
			time.Sleep(2 * time.Second) // routed while Redis is still full
			must(c.t, c.rc.ConfigSet(ctx, "maxmemory", "0").Err())
			return c.progress(time.Now())
		}},
	)
}

// refusedLetters returns the dead letters of reason output_refused, each
// source record once.
func (c *chaos) refusedLetters() []kafkaMessage {
	seen := map[string]bool{}
	var out []kafkaMessage
	for _, m := range testkit.ReadAll(c.t, c.s.cfg, c.s.cfg.Kafka.Topics.DLQ) {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		k := h["src_topic"] + "/" + h["src_partition"] + "/" + h["src_offset"]
		if !strings.HasPrefix(h["reason"], "output_refused") || seen[k] || c.redriven[k] {
			continue
		}
		seen[k] = true
		m.Topic = h["src_topic"]
		out = append(out, m)
	}
	return out
}

// redrive produces the output_refused dead letters back to their source
// topics, keyed as they are, and returns how many; their contents are
// exempt from the order check (a re-driven event arrives after later ones).
func (c *chaos) redrive() int {
	letters := c.refusedLetters()
	for i := range letters {
		m := &letters[i]
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if ev, err := schemas.DecodeKindFormat(m.Value, 1<<20, schemas.KindPublish, h[schemas.HeaderFormat]); err == nil {
			c.want.mu.Lock()
			c.want.redriven[ev.(*schemas.Publish).Msg.Content] = true
			c.want.mu.Unlock()
		}
		c.redriven[h["src_topic"]+"/"+h["src_partition"]+"/"+h["src_offset"]] = true
		m.Headers, m.Partition, m.Offset = nil, 0, 0
		if f := h[schemas.HeaderFormat]; f != "" { // the runbook's re-drive: keep the format
			m.Headers = []kafka.Header{{Key: schemas.HeaderFormat, Value: []byte(f)}}
		}
	}
	testkit.Produce(c.t, c.s.cfg, letters...)
	return len(letters)
}
