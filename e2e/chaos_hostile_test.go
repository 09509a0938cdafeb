//go:build chaos

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/loadgen"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// Faults of a cluster that moves and of hostile operations, added to the
// suite's list. The suite runs on a 3-broker kfake cluster.

// gate pauses the workload: send holds it shared per attempt; a fault that
// must drain the pipeline first (a log it is about to delete) holds it
// exclusively.
var gate sync.RWMutex

// drained waits until fanout and pusher have handled everything produced.
func (c *chaos) drained() {
	testkit.WaitCaughtUp(c.t, c.s.cfg, c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Publish, 5*time.Minute)
	testkit.WaitCaughtUp(c.t, c.s.cfg, c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Bulk, 5*time.Minute)
	testkit.WaitCaughtUp(c.t, c.s.cfg, c.s.cfg.Pusher.Group, c.s.cfg.Kafka.Topics.Push, 5*time.Minute)
}

// archiveDelivers keeps the deliver topics' records before their log is
// deleted: an IM server would have consumed them; verify counts them.
func (c *chaos) archiveDelivers() {
	for _, srv := range []string{"s1", "s2", "s3"} {
		c.archived[srv] = append(c.archived[srv], testkit.ReadAll(c.t, c.s.cfg, c.s.cfg.Kafka.Topics.DeliverPrefix+srv)...)
	}
}

// respondErr answers a request with a retriable error code on every
// partition (or the request as a whole), as a broker whose leader moved,
// that timed out or whose coordinator is loading would.
func respondErr(req kmsg.Request, code int16) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.ProduceRequest, *kmsg.FetchRequest, *kmsg.OffsetCommitRequest:
		resp := r.ResponseKind()
		failPartitions(reflect.ValueOf(r).Elem(), reflect.ValueOf(resp).Elem(), code)
		return resp
	case *kmsg.JoinGroupRequest:
		resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode, resp.Generation = code, -1
		return resp
	}
	return nil
}

// failPartitions fills the Topics of resp, a kmsg response, with every
// topic and partition of req, its request, each partition failing with
// code. The three requests it serves share that shape: Topics[].Topic
// (and TopicID), Topics[].Partitions[].Partition; fields of a response
// that a request lacks keep their kmsg defaults, and a fetch's watermarks
// are unknown (-1).
func failPartitions(req, resp reflect.Value, code int16) {
	topics := resp.FieldByName("Topics")
	for _, t := range req.FieldByName("Topics").Seq2() {
		rt := kmsgNew(topics.Type().Elem())
		setFrom(rt, t, "Topic", "TopicID")
		parts := rt.FieldByName("Partitions")
		for _, p := range t.FieldByName("Partitions").Seq2() {
			rp := kmsgNew(parts.Type().Elem())
			setFrom(rp, p, "Partition")
			rp.FieldByName("ErrorCode").SetInt(int64(code))
			for _, mark := range []string{"HighWatermark", "LastStableOffset"} {
				if f := rp.FieldByName(mark); f.IsValid() {
					f.SetInt(-1)
				}
			}
			parts.Set(reflect.Append(parts, rp))
		}
		topics.Set(reflect.Append(topics, rt))
	}
}

// kmsgNew is a new kmsg struct of type t with its protocol defaults.
func kmsgNew(t reflect.Type) reflect.Value {
	v := reflect.New(t)
	v.Interface().(interface{ Default() }).Default()
	return v.Elem()
}

// setFrom copies the named fields that both structs have from src to dst.
func setFrom(dst, src reflect.Value, names ...string) {
	for _, n := range names {
		if d, s := dst.FieldByName(n), src.FieldByName(n); d.IsValid() && s.IsValid() {
			d.Set(s)
		}
	}
}

// inject makes every nth request of key fail with code until stop is closed.
func (c *chaos) inject(key kmsg.Key, code int16, nth int64, stop <-chan struct{}, count *atomic.Int64) {
	cl := c.kafka.Cluster()
	var seen atomic.Int64
	cl.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-stop:
			cl.DropControl()
			return nil, nil, false
		default:
		}
		cl.KeepControl()
		if seen.Add(1)%nth != 0 {
			return nil, nil, false
		}
		resp := respondErr(req, code)
		if resp == nil {
			return nil, nil, false
		}
		count.Add(1)
		return resp, nil, true
	})
}

func init() {
	faults = append(faults,
		fault{"3 brokers: partition leaders shuffled and coordinators moved ×6", func(c *chaos) time.Duration {
			cl := c.kafka.Cluster()
			for i := 0; i < 6; i++ {
				time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
				cl.ShufflePartitionLeaders()
				cl.RehashCoordinators()
				p := int32(rand.IntN(c.s.cfg.Kafka.Partitions))
				_ = cl.MoveTopicPartition(c.s.cfg.Kafka.Topics.Push, p, int32(rand.IntN(3)))
			}
			return c.progress(time.Now())
		}},
		fault{"3 brokers: a broker removed and re-added", func(c *chaos) time.Duration {
			// Node 1, not 2: kfake's controller is fixed to the last broker
			// at start, and a removed controller never comes back (create and
			// delete topics then fail everywhere); a real cluster elects a
			// new controller. StopBroker closes the broker's connections
			// too, as a crashed broker's go.
			if err := c.kafka.StopBroker(1); err != nil {
				c.t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			if err := c.kafka.StartBroker(1); err != nil {
				c.t.Fatal(err)
			}
			return c.progress(time.Now())
		}},
		fault{"retriable errors on produce, fetch, commit and join (6 s)", func(c *chaos) time.Duration {
			stop := make(chan struct{})
			var n atomic.Int64
			c.inject(kmsg.Produce, kerr.NotLeaderForPartition.Code, 5, stop, &n)
			c.inject(kmsg.Produce, kerr.RequestTimedOut.Code, 7, stop, &n)
			c.inject(kmsg.Fetch, kerr.NotLeaderForPartition.Code, 5, stop, &n)
			c.inject(kmsg.OffsetCommit, kerr.CoordinatorLoadInProgress.Code, 3, stop, &n)
			c.inject(kmsg.OffsetCommit, kerr.RebalanceInProgress.Code, 5, stop, &n)
			c.inject(kmsg.JoinGroup, kerr.CoordinatorLoadInProgress.Code, 2, stop, &n)
			c.kafka.Cluster().RehashCoordinators() // clients look coordinators up again, some rejoin
			time.Sleep(6 * time.Second)
			close(stop)
			c.t.Logf("injected %d retriable errors", n.Load())
			if n.Load() == 0 {
				c.t.Error("no error was injected")
			}
			return c.progress(time.Now())
		}},
		fault{"imr.publish and imr.publish.bulk deleted and re-created under running roles", func(c *chaos) time.Duration {
			gate.Lock() // what the old topics hold must be read before they are deleted
			defer gate.Unlock()
			c.drained()
			ctx := context.Background()
			conn := kafkax.MustConn(c.s.cfg.Kafka)
			for _, topic := range []string{c.s.cfg.Kafka.Topics.Publish, c.s.cfg.Kafka.Topics.Bulk} {
				must(c.t, deleteTopic(ctx, c.s.cfg.Kafka.Brokers, topic))
			}
			time.Sleep(time.Second)
			if err := conn.EnsureTopics(ctx, 1, map[string]int{c.s.cfg.Kafka.Topics.Publish: c.s.cfg.Kafka.Partitions,
				c.s.cfg.Kafka.Topics.Bulk: c.s.cfg.Kafka.Partitions}); err != nil {
				c.t.Fatal(err)
			}
			return c.progress(time.Now())
		}},
		fault{"Kafka cluster replaced by an empty one", func(c *chaos) time.Duration {
			gate.Lock()
			defer gate.Unlock()
			c.drained()
			c.archiveDelivers()
			c.kafka.Close()
			if err := os.RemoveAll(c.kdir); err != nil {
				c.t.Fatal(err)
			}
			if err := os.MkdirAll(c.kdir, 0o755); err != nil {
				c.t.Fatal(err)
			}
			c.startKafka()
			return c.progress(time.Now())
		}},
		fault{"records at the broker's size limit on publish, presence and groups", func(c *chaos) time.Duration {
			big := bytes.Repeat([]byte("x"), 1048588-100)
			t := c.s.cfg.Kafka.Topics
			before := c.truncatedLetters()
			testkit.Produce(c.t, c.s.cfg,
				kafka.Message{Topic: t.Publish, Key: []byte("7:" + strconv.Itoa(offBase+100)), Value: big},
				kafka.Message{Topic: t.Presence, Key: []byte("7:101"), Value: big},
				kafka.Message{Topic: t.Groups, Key: []byte("7:1"), Value: big})
			took := c.progress(time.Now())
			testkit.Eventually(c.t, 60*time.Second, "three truncated dead letters", func() bool {
				return c.truncatedLetters()-before >= 3
			})
			return took
		}},
	)
}

// truncatedLetters counts the truncated dead letters written so far.
func (c *chaos) truncatedLetters() int {
	n := 0
	for _, m := range testkit.ReadAll(c.t, c.s.cfg, c.s.cfg.Kafka.Topics.DLQ) {
		for _, h := range m.Headers {
			if h.Key == "truncated" {
				n++
			}
		}
	}
	return n
}

// idleGatewayConnections opens 1 000 idle connections to a gateway process
// on the chaos cluster and returns the gateway's RSS growth per connection.
func (c *chaos) idleGatewayConnections() (int64, error) {
	const idle = 1000
	gwAddr, p := c.s.startGateway("127.0.0.1:0", "--gateway.server_id", "ip_port")
	defer p.Stop()
	time.Sleep(time.Second)
	before := rss(c.t, p.Cmd.Process.Pid)
	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := 0; i < idle; i++ {
		nc, err := net.Dial("tcp", gwAddr)
		if err != nil {
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, nc)
	}
	time.Sleep(3 * time.Second)
	return (rss(c.t, p.Cmd.Process.Pid) - before) / idle, nil
}

// twoServersOneHost runs a gateway on the chaos cluster; IM server A sends a
// burst of MSG_PUSH while Kafka is slowed (every produce request delayed)
// and IM server B connects from the same host. Both must stay connected as
// two servers, and A's whole burst must land exactly once. It returns the
// missing and doubled entries.
func (c *chaos) twoServersOneHost(burst int) (missing, extra int) {
	gwAddr, p := c.s.startGateway("127.0.0.1:0")
	defer p.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := loadgen.Dial(ctx, gwAddr, "127.0.0.9")
	must(c.t, err)
	defer a.Close()
	cl := c.kafka.Cluster()
	slow := make(chan struct{})
	cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-slow:
			cl.DropControl()
		default:
			cl.KeepControl()
			time.Sleep(2 * time.Millisecond)
		}
		return nil, nil, false
	})
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < burst; i++ {
			in := imr.AppendInner(nil, schemas.Message{Cmd: 4, Version: 2, Sender: 1, Receiver: offBase + 9, Content: "twohost-" + strconv.Itoa(i)})
			if err := a.Send(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{offBase + 9}, Inner: in})); err != nil {
				sent <- err
				return
			}
		}
		sent <- a.Flush()
	}()
	time.Sleep(500 * time.Millisecond)
	b, err := loadgen.Dial(ctx, gwAddr, "127.0.0.9")
	must(c.t, err)
	defer b.Close()
	must(c.t, b.Send(imr.CmdSubscribe, imr.AppendSubscribe(nil, imr.Subscribe{AppID: app, UID: 909, Online: 1})))
	must(c.t, b.Flush())
	must(c.t, <-sent)
	time.Sleep(3 * time.Second)
	close(slow)
	if on, _ := c.s.online(c.t, 909); !on {
		c.t.Error("B's user not online")
	}
	c.drained()
	got := map[string]int{}
	for _, e := range c.rc.LRange(ctx, "push_queue", 0, -1).Val() {
		var v struct {
			Content string `json:"content"`
		}
		if json.Unmarshal([]byte(e), &v) == nil && strings.HasPrefix(v.Content, "twohost-") {
			got[v.Content]++
		}
	}
	for i := 0; i < burst; i++ {
		switch n := got["twohost-"+strconv.Itoa(i)]; {
		case n == 0:
			missing++
		case n > 1:
			extra += n - 1
		}
	}
	return missing, extra
}
