package ingest_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestConsumeDeliveries: repeats (same src) are dropped, invalid records
// skipped and counted, a failing handler gets the same batch again, and a
// new consumer resumes after what the last one committed.
func TestConsumeDeliveries(t *testing.T) {
	const topic = "imr.deliver.dtest"
	rec := func(content string, srcOffset int) kafka.Message {
		src := ""
		if srcOffset >= 0 {
			src = fmt.Sprintf(`,"src":{"topic":"imr.publish","partition":1,"offset":%d,"inc":"f1"}`, srcOffset)
		}
		v := fmt.Sprintf(`{"v":1,"type":"publish","server":"im-1","appid":7,"receiver":2002,"msg":{"cmd":17,"sender":1,"receiver":2002,"content":%q}%s}`, content, src)
		return kafka.Message{Topic: topic, Key: []byte("7:2002"), Value: []byte(v)}
	}
	cfg := stack
	testkit.Produce(t, cfg, rec("a", 10), rec("b", 11), rec("b-again", 11), rec("no-src", -1),
		kafka.Message{Topic: topic, Key: []byte("7:2002"), Value: []byte(`{"v":1,"type":"publish"`)}, rec("c", 12))

	var mu sync.Mutex
	var got []string
	var repeats, invalid, calls atomic.Int64
	consume := func(ctx context.Context, want int) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- ingest.ConsumeDeliveries(ctx, ingest.DeliveriesConfig{Brokers: brokers, Server: "dtest",
				OnRepeats: func(n int) { repeats.Add(int64(n)) },
				OnInvalid: func([]byte, error) { invalid.Add(1) }},
				func(ctx context.Context, batch []ingest.Delivery) error {
					if calls.Add(1) == 1 {
						return fmt.Errorf("the first call fails")
					}
					mu.Lock()
					defer mu.Unlock()
					for _, d := range batch {
						got = append(got, d.Msg.Content)
					}
					return nil
				})
		}()
		testkit.Eventually(t, 30*time.Second, "deliveries handed over", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= want
		})
		time.Sleep(500 * time.Millisecond) // let the commit go out and any extra arrive
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	consume(context.Background(), 4)
	mu.Lock()
	if fmt.Sprint(got) != "[a b no-src c]" {
		t.Errorf("handed over %v, want [a b no-src c]", got)
	}
	mu.Unlock()
	if repeats.Load() != 1 || invalid.Load() != 1 {
		t.Errorf("repeats %d, invalid %d; want 1, 1", repeats.Load(), invalid.Load())
	}

	testkit.Produce(t, cfg, rec("d", 13))
	consume(context.Background(), 5)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[a b no-src c d]" {
		t.Errorf("after a restart: %v, want [a b no-src c d] (resumed after the commit)", got)
	}
}
