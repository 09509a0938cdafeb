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
)

func startPusher(t *testing.T, cfg config.Config) (cancel func()) {
	t.Helper()
	conn := kafkax.MustConn(cfg.Kafka)
	rc := redisx.MustNew(cfg.Redis)
	reg := prometheus.NewRegistry()
	p, err := pusher.New(cfg.Pusher, stage.NewEnv(cfg, conn, obs.NewMetrics(reg), reg, nil), pusher.NewRedisSink(rc, cfg.Redis), rc)
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
