package pusher_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
)

func BenchmarkEncodePeerEntry(b *testing.B) {
	enc := &pusher.Encoder{SystemPush: true}
	job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: []int64{1001},
		Msg: schemas.Message{Cmd: 4, Sender: 1000, Receiver: 1001, Content: `{"text":"hello <there> & welcome"}`}}
	buf := make([]pusher.Entry, 0, 1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = enc.Append(buf[:0], job, "imr.push", "", 3, int64(i))
	}
}

func BenchmarkEncodeGroupEntry1000(b *testing.B) {
	enc := &pusher.Encoder{}
	rs := make([]int64, 1000)
	for i := range rs {
		rs[i] = int64(100000 + i)
	}
	job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: rs, Msg: schemas.Message{Cmd: 8, Sender: 1, Receiver: 55, Content: "hi"}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		enc.Append(nil, job, "imr.push", "", 3, int64(i))
	}
}

// BenchmarkRedisSinkAppend appends batches of 1000 peer entries (one list,
// one source partition) to a master with one replica, without and with
// redis.wait_replicas 1: the cost of WAIT per batch. Needs redis-server.
func BenchmarkRedisSinkAppend(b *testing.B) {
	master := testkit.Redis(b, embedded.RedisOptions{})
	host, port, _ := net.SplitHostPort(master.Addr)
	testkit.Redis(b, embedded.RedisOptions{Extra: []string{"--replicaof", host, port}})
	rc := testkit.RedisClient(b, master.Addr)
	ctx := context.Background()
	testkit.Eventually(b, 30*time.Second, "the replica in sync", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
	})
	enc := &pusher.Encoder{}
	for _, wait := range []int{0, 1} {
		b.Run("wait_replicas="+strconv.Itoa(wait), func(b *testing.B) {
			s := &pusher.RedisSink{Client: rc, Prefix: "bench" + strconv.Itoa(wait) + ":", WaitReplicas: wait, WaitTimeout: time.Second}
			entries := make([]pusher.Entry, 0, 1000)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				entries = entries[:0]
				for j := 0; j < 1000; j++ {
					job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: []int64{int64(j)},
						Msg: schemas.Message{Cmd: 4, Sender: 1, Receiver: int64(j), Content: "bench"}}
					entries = enc.Append(entries, job, "imr.push", "", 0, int64(i*1000+j))
				}
				if err := s.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "entries/s")
			b.StopTimer()
			_ = rc.FlushAll(ctx).Err()
			b.StartTimer()
		})
	}
}
