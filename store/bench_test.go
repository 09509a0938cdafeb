package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// benchUsers fills a store with 1000 users online on 8 servers and measures
// one batched look-up of all of them (what the fanout does per batch).
func benchUsers(b *testing.B, s store.PresenceStore) {
	ctx := context.Background()
	now := time.Now()
	var evs []*schemas.Presence
	online := true
	for srv := 0; srv < 8; srv++ {
		evs = append(evs, &schemas.Presence{Header: schemas.Header{Type: schemas.TypeServerUp, Server: "s" + string(rune('0'+srv)), AppID: 7}, Epoch: 1})
	}
	uids := make([]int64, 1000)
	for i := range uids {
		uids[i] = int64(i + 1)
		evs = append(evs, &schemas.Presence{Header: schemas.Header{Type: schemas.TypeSubscribe, Server: "s" + string(rune('0'+i%8)), AppID: 7}, Epoch: 1, UID: uids[i], Online: &online})
	}
	if err := s.Apply(ctx, evs, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Users(ctx, 7, uids, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(uids))/b.Elapsed().Seconds(), "users/s")
}

func BenchmarkUsersBatchMemory(b *testing.B) { benchUsers(b, store.NewMemoryPresence(30*time.Second)) }

func BenchmarkUsersBatchRedis(b *testing.B) {
	r := testkit.Redis(b, embedded.RedisOptions{})
	benchUsers(b, store.NewRedisPresence(testkit.RedisClient(b, r.Addr), "imstream:", 30*time.Second, time.Second))
}
