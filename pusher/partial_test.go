package pusher_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/pusher"
)

// TestRedisSinkPartialPipeline: one list and source partition whose
// entries take three script calls in one pipeline, with one call refused
// and the next accepted — by a real Redis at its memory limit (used memory
// falls under it between two calls), or as a failover refuses one call.
// Nothing after a refused call is appended, so the watermark never passes
// an entry that is not in the list; the retry appends every entry exactly
// once, in order.
func TestRedisSinkPartialPipeline(t *testing.T) {
	const big = 100 << 10 // two entries per script call (256 KiB)
	entries := func() []pusher.Entry {
		var es []pusher.Entry
		for i := range 6 {
			data := append([]byte(fmt.Sprintf("e%d:", i)), bytes.Repeat([]byte("x"), big)...)
			es = append(es, pusher.Entry{List: "push_queue", SrcTopic: "imr.publish", SrcPartition: 3, Pos: int64(10+i) << 16, Job: int64(100 + i), Data: data})
		}
		return es
	}
	for _, tc := range []struct {
		name      string
		refuse    int // the call refused by the hook (-1: none)
		oom       bool
		afterFail int // entries in the list after the failed attempt
	}{
		{name: "maxmemory_first_call", refuse: -1, oom: true, afterFail: 0},
		{name: "refused_middle_call", refuse: 1, afterFail: 2},
		{name: "refused_first_call", refuse: 0, afterFail: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testkit.Redis(t, embedded.RedisOptions{})
			ctx := context.Background()
			hook := &testkit.Strike{Calls: 3, Refuse: tc.refuse, After: -1}
			rc := testkit.RedisClient(t, r.Addr)
			rc.AddHook(hook)
			s := &pusher.RedisSink{Client: rc, Prefix: "imstream:"}
			// Loads the script, so that the pipeline below is not a NOSCRIPT retry.
			if err := s.Append(ctx, []pusher.Entry{{List: "warm", SrcTopic: "t", Data: []byte("w")}}); err != nil {
				t.Fatal(err)
			}
			if tc.oom {
				// used memory over maxmemory (noeviction) by a ballast the
				// hook deletes right after the first call.
				if err := rc.Set(ctx, "ballast", strings.Repeat("b", 8<<20), 0).Err(); err != nil {
					t.Fatal(err)
				}
				if err := rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
					t.Fatal(err)
				}
				if err := rc.ConfigSet(ctx, "maxmemory", fmt.Sprint(testkit.UsedMemory(t, rc)-4<<20)).Err(); err != nil {
					t.Fatal(err)
				}
				hook.Free, hook.After = "ballast", 0
			}
			err := s.Append(ctx, entries())
			if err == nil {
				t.Fatal("Append reported success with a call refused")
			}
			t.Logf("first attempt: %v", err)
			if tc.oom && !strings.Contains(err.Error(), "OOM") {
				t.Fatalf("want Redis's OOM refusal, got %v", err)
			}
			if n := rc.LLen(ctx, "push_queue").Val(); n != int64(tc.afterFail) {
				t.Errorf("after the failed attempt: %d entries, want %d (the calls before the refused one)", n, tc.afterFail)
			}
			es := entries()
			if err := s.Append(ctx, es); err != nil {
				t.Fatalf("retry: %v", err)
			}
			got := rc.LRange(ctx, "push_queue", 0, -1).Val()
			var heads []string
			for _, g := range got {
				heads = append(heads, g[:strings.IndexByte(g, ':')])
			}
			if fmt.Sprint(heads) != "[e0 e1 e2 e3 e4 e5]" {
				t.Fatalf("push_queue after the retry: %v, want [e0 e1 e2 e3 e4 e5]", heads)
			}
			written := 0
			for _, e := range es {
				if e.Written {
					written++
				}
			}
			if written != 6-tc.afterFail {
				t.Errorf("the retry reports %d entries written, want %d", written, 6-tc.afterFail)
			}
			if wm := rc.Get(ctx, s.WatermarkKey("push_queue", "imr.publish", 3, 0)).Val(); wm != fmt.Sprint(int64(15)<<16) {
				t.Errorf("watermark %s, want %d", wm, int64(15)<<16)
			}
		})
	}
}
