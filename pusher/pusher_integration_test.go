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

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
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
	gs := store.NewRedisGroups(rc, cfg.Redis.KeyPrefix, 0)
	p, err := pusher.New(cfg.Pusher, stage.NewEnv(cfg, conn, obs.NewMetrics(reg), reg, nil), pusher.NewRedisSink(rc, cfg.Redis), ps, gs, rc)
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
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	for _, systemPush := range []bool{true, false} {
		t.Run(fmt.Sprintf("system_push=%v", systemPush), func(t *testing.T) {
			r := testkit.Redis(t, embedded.RedisOptions{})
			cfg := testkit.Config(k.Addr, r.Addr)
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
			testkit.Produce(t, cfg, msgs...)

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
			rc := testkit.RedisClient(t, r.Addr)
			ctx := context.Background()
			total := 0
			for _, v := range want {
				total += len(v)
			}
			testkit.Eventually(t, 30*time.Second, "all entries", func() bool {
				n := 0
				for l := range want {
					n += int(rc.LLen(ctx, l).Val())
				}
				return n >= total
			})
			// Nothing more arrives: the pusher committed past every job.
			testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
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

// TestMemberRangeJobs: the pusher resolves a member-range job (a big
// group's message) to the group's members in the range, minus the sender,
// offline when it writes; a range with no offline member and a group that
// is gone yield no entry. It reads imstream's own records up to the size
// they were written under (header max_bytes, capped at
// kafka.max_record_bytes), while a third party's record over
// schemas.max_bytes is still dead-lettered as oversize.
func TestMemberRangeJobs(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	ctx := context.Background()
	rc := testkit.RedisClient(t, r.Addr)
	ps := store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, 0)
	gs := store.NewRedisGroups(rc, cfg.Redis.KeyPrefix, 0)
	now := time.Now()
	h := func(typ schemas.Type) schemas.Header {
		return schemas.Header{V: 1, Type: typ, Server: "im-1", AppID: 7, TS: now.UnixMilli()}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(gs.Apply(ctx, []*schemas.Group{{Header: h(schemas.TypeGroupCreate), GroupID: 55, Members: []int64{2, 3, 4, 5, 8, 9}}}))
	evs := []*schemas.Presence{{Header: h(schemas.TypeServerUp), Epoch: 1}}
	for _, uid := range []int64{2, 4, 8} {
		on := true
		evs = append(evs, &schemas.Presence{Header: h(schemas.TypeSubscribe), Epoch: 1, UID: uid, Online: &on})
	}
	must(ps.Apply(ctx, evs, now))
	stop := startPusher(t, cfg)
	defer stop()

	own := []kafka.Header{{Key: stage.HeaderMaxBytes, Value: []byte(fmt.Sprint(cfg.Kafka.MaxRecordBytes))}}
	rangeJob := func(gid, from, to, offset int64) kafka.Message {
		j := &schemas.PushJob{Header: h(schemas.TypePushJob), MemberRange: []int64{from, to},
			Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 3, Receiver: gid, Content: "g"},
			Src: &schemas.Source{Topic: "imr.publish", Partition: 0, Offset: offset}}
		return kafka.Message{Topic: cfg.Kafka.Topics.Push, Key: []byte("imr.publish:0"), Value: j.AppendJSON(nil), Headers: own}
	}
	big := make([]int64, 12000) // ~240 KB of 19-digit uids: over schemas.max_bytes (64 KiB)
	for i := range big {
		big[i] = 1000000000000000001 + int64(i)
	}
	listed := func(offset int64, headers []kafka.Header) kafka.Message {
		j := &schemas.PushJob{Header: h(schemas.TypePushJob), Receivers: big,
			Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 3, Receiver: 66, Content: "listed"},
			Src: &schemas.Source{Topic: "imr.publish", Partition: 1, Offset: offset}}
		return kafka.Message{Topic: cfg.Kafka.Topics.Push, Key: []byte("imr.publish:1"), Value: j.AppendJSON(nil), Headers: headers}
	}
	testkit.Produce(t, cfg,
		rangeJob(55, 0, 5, 1), // 2 3 4: 3 sends, 2 and 4 online: no entry
		rangeJob(55, 5, 9, 2), // 5 8: [5]
		rangeJob(55, 9, 0, 3), // 9: [9]
		rangeJob(56, 0, 0, 4), // no such group
		listed(1, own),        // imstream's own: read up to kafka.max_record_bytes
		listed(2, nil),        // anyone else's: schemas.max_bytes, dead-lettered
	)
	testkit.Eventually(t, 30*time.Second, "three group entries", func() bool { return rc.LLen(ctx, "group_push_queue").Val() >= 3 })
	testkit.Eventually(t, 30*time.Second, "the oversize record dead-lettered", func() bool {
		return len(testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ)) >= 1
	})
	// Nothing more arrives: the pusher committed past every job.
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
	var ranged []string // group 55's entries, in order (one source partition); the listed job's apart
	listedN := 0
	for _, v := range rc.LRange(ctx, "group_push_queue", 0, -1).Val() {
		var e struct {
			Content   string
			Receivers []int64
		}
		must(json.Unmarshal([]byte(v), &e))
		if e.Content == "listed" {
			listedN += len(e.Receivers)
		} else {
			ranged = append(ranged, v)
		}
	}
	want := []string{
		`{"appid":7,"content":"g","group_id":55,"receivers":[5],"sender":3}`,
		`{"appid":7,"content":"g","group_id":55,"receivers":[9],"sender":3}`,
	}
	if fmt.Sprint(ranged) != fmt.Sprint(want) {
		t.Fatalf("group 55's entries:\n got %q\nwant %q", ranged, want)
	}
	if listedN != len(big) {
		t.Fatalf("the 240 KB job's entries hold %d receivers, want %d", listedN, len(big))
	}
	dl := testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ)
	if len(dl) != 1 || !strings.Contains(header(dl[0], "reason"), "oversize") || header(dl[0], "src_offset") != "1" { // the second record of key imr.publish:1
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
