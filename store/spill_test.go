package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/store"
)

// TestSpillStores: the Redis store and the memory one keep the same marks
// and the same quota buckets: a full bucket grants one burst, then nothing;
// a reservation goes into debt and says how long it takes to pay.
func TestSpillStores(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	now := time.Now()
	mem := store.NewMemorySpill()
	mem.Now = func() time.Time { return now } // frozen: the Redis one runs on its own clock, for milliseconds here
	for name, st := range map[string]store.SpillStore{"redis": store.NewRedisSpill(testkit.RedisClient(t, r.Addr), "t:"), "memory": mem} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := store.SpillStream(8, "imr.publish", "r1", 3), store.SpillStream(9, "imr.publish", "", 0)
			if err := st.Hold(ctx, map[string]int64{a: 41}); err != nil {
				t.Fatal(err)
			}
			if err := st.Drain(ctx, map[string]int64{a: 40}); err != nil {
				t.Fatal(err)
			}
			held, drained, err := st.Marks(ctx, []string{a, b})
			if err != nil || held[0] != 41 || drained[0] != 40 || held[1] != -1 || drained[1] != -1 {
				t.Fatalf("marks %v %v (%v), want [41 -1] [40 -1]", held, drained, err)
			}
			bucket := store.QuotaBucket(8, "online")
			take := store.QuotaTake{Bucket: bucket, Rate: 10, Depth: 100, N: 70}
			got, err := st.Take(ctx, []store.QuotaTake{take, take})
			if err != nil || got[0].Granted != 70 || got[1].Granted < 30 || got[1].Granted > 31 {
				t.Fatalf("takes %+v (%v), want 70 then the 30 left", got, err)
			}
			reserve := take
			reserve.Reserve, reserve.N = true, 50
			got, err = st.Take(ctx, []store.QuotaTake{reserve})
			if err != nil || got[0].Granted != 50 || got[0].Wait < 4*time.Second || got[0].Wait > 5*time.Second {
				t.Fatalf("reserve %+v (%v), want 50 granted and about 5 s of debt", got, err)
			}
			got, _ = st.Take(ctx, []store.QuotaTake{take})
			if got[0].Granted != 0 {
				t.Fatalf("a bucket in debt granted %d", got[0].Granted)
			}
		})
	}
}
