//go:build chaos

package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// Faults while fair share drains a held app: the chaos stack runs with
// fair share on and a quota for floodApp (the workload's app has none, so
// it is never held). Each fault floods half a run's events of floodApp to
// offline users in one produce, far above its quota, and strikes while
// the drainer reads them back; every one of them must land once, in each
// receiver's order.

// floodApp is the app that floods in these faults.
const floodApp = 9

// floodQuota is floodApp's quota for a run of n events: the drain of half
// of them takes about 10 s.
func floodQuota(n int) int { return max(n/20, 200) }

// fairShareArgs are the chaos stack's fair-share flags.
func fairShareArgs(n int) []string {
	return []string{"--fanout.fair_share.enabled", "--fanout.fair_share.quotas", fmt.Sprintf("%d=%d", floodApp, floodQuota(n))}
}

func init() {
	faults = append(faults,
		fault{"SIGKILL fanout ×3 while a held app drains", func(c *chaos) time.Duration {
			start := time.Now()
			c.flood()
			for range 3 {
				time.Sleep(time.Duration(500+rand.IntN(2000)) * time.Millisecond)
				c.restart("fanout", syscall.SIGKILL)
			}
			return c.progress(start)
		}},
		fault{"fanout consumers added and removed while a held app drains", func(c *chaos) time.Duration {
			start := time.Now()
			c.flood()
			main := c.s.procs["fanout"]
			_, f1 := c.s.start("fanout")
			_, f2 := c.s.start("fanout")
			c.s.procs["fanout"] = main
			time.Sleep(time.Duration(2000+rand.IntN(2000)) * time.Millisecond)
			f1.Stop()
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
			f2.Kill()
			return c.progress(start)
		}},
	)
}

// flood produces half a run's events of floodApp (peer messages to 50
// offline users, each receiver's in order) in one go, and returns once
// the fanout holds the app back. Their contents are
// "<run>-flood<k>-<i>": verify checks their order per receiver and k.
func (c *chaos) flood() {
	n := envInt("CHAOS_EVENTS", 200000) / 2
	c.floods++ // a mixed run may flood twice: each flood's contents are its own
	enc := ingest.NewEncoder("s1", 1, ingest.Topics{Presence: c.s.cfg.Kafka.Topics.Presence, Publish: c.s.cfg.Kafka.Topics.Publish, Bulk: c.s.cfg.Kafka.Topics.Bulk})
	recs := make([]kafka.Message, 0, n)
	for i := range n {
		to := int64(offBase + 5000 + i%50)
		content := c.run + "-flood" + strconv.Itoa(c.floods) + "-" + strconv.Itoa(i)
		c.want.add(c.want.push, content, to)
		recs = append(recs, enc.Publish(floodApp, to, schemas.Message{Cmd: 4, Sender: 1, Receiver: to, Content: content}, ingest.Meta{}).Message())
	}
	testkit.Produce(c.t, c.s.cfg, recs...)
	c.sent.Add(int64(n))
	testkit.Eventually(c.t, 2*time.Minute, "the flooding app held back", func() bool {
		return metric(c.t, c.s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="online",path="held"}`, floodApp)) > 0
	})
}
