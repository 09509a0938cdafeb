package pusher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/obs"
	"github.com/imstream/imstream/internal/redisx"
	"github.com/imstream/imstream/internal/stage"
	"github.com/imstream/imstream/internal/tools/devstack"
	"github.com/imstream/imstream/internal/tools/testenv"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

func startPusher(t *testing.T, cfg config.Config) (cancel func()) {
	t.Helper()
	conn := kafkax.MustConn(cfg.Kafka)
	rc := redisx.MustNew(cfg.Redis)
	reg := prometheus.NewRegistry()
	ps := store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, cfg.Presence.ServerCache)
	p, err := pusher.New(cfg.Pusher, stage.NewEnv(cfg, conn, obs.NewMetrics(reg), reg, nil), pusher.NewRedisSink(rc, cfg.Redis), ps, rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("pusher run: %v", err)
		}
		_ = rc.Close()
	}
}

func job(appid int64, receivers []int64, msg schemas.Message) []byte {
	b, _ := json.Marshal(&schemas.PushJob{
		Header:    schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: appid, TS: time.Now().UnixMilli()},
		Receivers: receivers, Msg: msg,
	})
	return b
}

// TestPushListsEveryCmd covers docs/protocol.md §5: every cmd, ROM and non-ROM apps,
// system push on and off; exact list names and exact entries.
func TestPushListsEveryCmd(t *testing.T) {
	k := testenv.Kafka(t, devstack.KafkaOptions{})
	for _, systemPush := range []bool{true, false} {
		t.Run(fmt.Sprintf("system_push=%v", systemPush), func(t *testing.T) {
			r := testenv.Redis(t, devstack.RedisOptions{})
			cfg := testenv.Config(k.Addr, r.Addr)
			cfg.Kafka.Topics.Push = fmt.Sprintf("imr.push.%v", systemPush)
			cfg.Pusher.Group = fmt.Sprintf("pusher-%v", systemPush)
			cfg.Pusher.SystemPush = systemPush
			cfg.Pusher.ROMApps = []int64{9}
			stop := startPusher(t, cfg)
			defer stop()

			topic := cfg.Kafka.Topics.Push
			var msgs []kafka.Message
			for _, appid := range []int64{7, 9} {
				msgs = append(msgs,
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001}, schemas.Message{Cmd: 4, Sender: 1, Receiver: 1001, Content: `hi <b>&"x"`})},
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001, 1002}, schemas.Message{Cmd: 8, Sender: 1, Receiver: 55, Content: "grp"})},
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001}, schemas.Message{Cmd: 24, CustomerAppID: 3, CustomerID: 4, StoreID: 5, SellerID: 6, Content: "c"})},
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001}, schemas.Message{Cmd: 25, CustomerAppID: 3, CustomerID: 4, StoreID: 5, SellerID: 6, Content: "cs"})},
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001}, schemas.Message{Cmd: 64, SenderAppID: 2, Sender: 1, ReceiverAppID: appid, Receiver: 1001, Content: "v2"})},
					kafka.Message{Topic: topic, Key: []byte("k"), Value: job(appid, []int64{1001}, schemas.Message{Cmd: 21, Notification: "sys"})},
				)
			}
			testenv.Produce(t, cfg, msgs...)

			want := map[string][]string{
				"push_queue":         {`{"appid":7,"content":"hi \u003cb\u003e\u0026\"x\"","receiver":1001,"sender":1}`},
				"push_queue_9":       {`{"appid":9,"content":"hi \u003cb\u003e\u0026\"x\"","receiver":1001,"sender":1}`},
				"group_push_queue":   {`{"appid":7,"content":"grp","group_id":55,"receivers":[1001,1002],"sender":1}`},
				"group_push_queue_9": {`{"appid":9,"content":"grp","group_id":55,"receivers":[1001,1002],"sender":1}`},
				"customer_push_queue": {
					`{"appid":7,"command":24,"content":"c","customer":4,"customer_appid":3,"receiver":1001,"seller":6,"store":5}`,
					`{"appid":7,"command":25,"content":"cs","customer":4,"customer_appid":3,"receiver":1001,"seller":6,"store":5}`,
					`{"appid":9,"command":24,"content":"c","customer":4,"customer_appid":3,"receiver":1001,"seller":6,"store":5}`,
					`{"appid":9,"command":25,"content":"cs","customer":4,"customer_appid":3,"receiver":1001,"seller":6,"store":5}`,
				},
				"customer_push_queue_v2":   {`{"appid":7,"content":"v2","receiver":1001,"receiver_appid":7,"sender":1,"sender_appid":2}`},
				"customer_push_queue_v2_9": {`{"appid":9,"content":"v2","receiver":1001,"receiver_appid":9,"sender":1,"sender_appid":2}`},
			}
			if systemPush {
				want["system_push_queue"] = []string{`{"appid":7,"content":"sys","receiver":1001}`, `{"appid":9,"content":"sys","receiver":1001}`}
			}
			rc := testenv.RedisClient(t, r.Addr)
			ctx := context.Background()
			total := 0
			for _, v := range want {
				total += len(v)
			}
			testenv.Eventually(t, 30*time.Second, "all entries", func() bool {
				n := 0
				for l := range want {
					n += int(rc.LLen(ctx, l).Val())
				}
				return n >= total
			})
			time.Sleep(300 * time.Millisecond) // nothing more should arrive
			var keys []string
			for _, k := range rc.Keys(ctx, "*push_queue*").Val() {
				if !strings.HasPrefix(k, cfg.Redis.KeyPrefix) {
					keys = append(keys, k)
				}
			}
			if len(keys) != len(want) {
				t.Errorf("lists = %v, want exactly %d lists", keys, len(want))
			}
			for l, entries := range want {
				got := rc.LRange(ctx, l, 0, -1).Val()
				if fmt.Sprint(got) != fmt.Sprint(entries) {
					t.Errorf("%s:\n got %q\nwant %q", l, got, entries)
				}
			}
		})
	}
}

// TestIfOfflineJobs: the pusher keeps the offline receivers of an
// if_offline job (presence read when it writes), writes nothing for a job
// whose receivers are all online, and reads imstream's own records up to
// the size they were written under (header max_bytes, capped at
// kafka.max_record_bytes), while a third party's record over
// schemas.max_bytes is still dead-lettered as oversize.
func TestIfOfflineJobs(t *testing.T) {
	k := testenv.Kafka(t, devstack.KafkaOptions{})
	r := testenv.Redis(t, devstack.RedisOptions{})
	cfg := testenv.Config(k.Addr, r.Addr)
	ctx := context.Background()
	rc := testenv.RedisClient(t, r.Addr)
	ps := store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, 0)
	now := time.Now()
	h := func(typ schemas.Type, key string) schemas.Header {
		return schemas.Header{V: 1, Type: typ, Server: "im-1", AppID: 7, TS: now.UnixMilli()}
	}
	evs := []*schemas.Presence{{Header: h(schemas.TypeServerUp, ""), Epoch: 1}}
	for _, uid := range []int64{1000000000000000002, 1000000000000000004, 8} {
		on := true
		evs = append(evs, &schemas.Presence{Header: h(schemas.TypeSubscribe, ""), Epoch: 1, UID: uid, Online: &on})
	}
	if err := ps.Apply(ctx, evs, now); err != nil {
		t.Fatal(err)
	}
	stop := startPusher(t, cfg)
	defer stop()

	big := make([]int64, 12000) // ~240 KB of 19-digit uids: over schemas.max_bytes (64 KiB)
	for i := range big {
		big[i] = 1000000000000000001 + int64(i)
	}
	candidates := func(receivers []int64, offset int64, header bool) kafka.Message {
		j := &schemas.PushJob{Header: h(schemas.TypePushJob, ""), Receivers: receivers, IfOffline: true,
			Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 55, Content: "g"},
			Src: &schemas.Source{Topic: "imr.publish", Partition: 0, Offset: offset}}
		m := kafka.Message{Topic: cfg.Kafka.Topics.Push, Key: []byte("imr.publish:0"), Value: j.AppendJSON(nil)}
		if header {
			m.Headers = []kafka.Header{{Key: kafkax.HeaderMaxBytes, Value: []byte(fmt.Sprint(cfg.Kafka.MaxRecordBytes))}}
		}
		return m
	}
	testenv.Produce(t, cfg,
		candidates([]int64{1000000000000000002, 1000000000000000003, 1000000000000000004, 1000000000000000005}, 1, true),
		candidates([]int64{8}, 2, true), // all online: no entry
		candidates(big, 3, true),
		candidates(big, 4, false), // not written by imstream: the input limit applies
	)
	testenv.Eventually(t, 30*time.Second, "two group entries", func() bool { return rc.LLen(ctx, "group_push_queue").Val() >= 2 })
	testenv.Eventually(t, 30*time.Second, "the oversize record dead-lettered", func() bool {
		return len(testenv.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ)) >= 1
	})
	time.Sleep(300 * time.Millisecond) // nothing more should arrive
	got := rc.LRange(ctx, "group_push_queue", 0, -1).Val()
	if len(got) != 2 || got[0] != `{"appid":7,"content":"g","group_id":55,"receivers":[1000000000000000003,1000000000000000005],"sender":1}` {
		t.Fatalf("group_push_queue: %d entries, first %.200s", len(got), got[0])
	}
	var e struct{ Receivers []int64 }
	if err := json.Unmarshal([]byte(got[1]), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Receivers) != len(big)-2 { // 1000000000000000002 and ...4 are online
		t.Fatalf("the big job's entry has %d receivers, want %d", len(e.Receivers), len(big)-2)
	}
	dl := testenv.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ)
	if len(dl) != 1 || !strings.Contains(header(dl[0], "reason"), "oversize") || header(dl[0], "src_offset") != "3" {
		t.Fatalf("dead letters: %d, first reason %q offset %q", len(dl), header(dl[0], "reason"), header(dl[0], "src_offset"))
	}
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
