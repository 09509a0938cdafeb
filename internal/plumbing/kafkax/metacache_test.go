package kafkax

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// countingTransport answers metadata requests from a fixed topic table and
// counts the calls that reach it.
type countingTransport struct {
	calls  int
	topics map[string]int // topic → partitions; absent means unknown
	fail   error
}

func (c *countingTransport) RoundTrip(_ context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	c.calls++
	if c.fail != nil {
		return nil, c.fail
	}
	r, ok := req.(*metadataAPI.Request)
	if !ok {
		return nil, errors.New("not a metadata request")
	}
	resp := &metadataAPI.Response{}
	for _, name := range r.TopicNames {
		t := metadataAPI.ResponseTopic{Name: name}
		if n, ok := c.topics[name]; ok {
			t.Partitions = make([]metadataAPI.ResponsePartition, n)
		} else {
			t.ErrorCode = int16(kafka.UnknownTopicOrPartition)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp, nil
}

func metaReq(topics ...string) *metadataAPI.Request {
	return &metadataAPI.Request{TopicNames: topics, AllowAutoTopicCreation: true}
}

func partitionsOf(t *testing.T, resp kafka.Response, topic string) int {
	t.Helper()
	for _, tp := range resp.(*metadataAPI.Response).Topics {
		if tp.Name == topic {
			return len(tp.Partitions)
		}
	}
	t.Fatalf("topic %s missing from the response", topic)
	return 0
}

func TestMetadataCache(t *testing.T) {
	ctx := context.Background()
	next := &countingTransport{topics: map[string]int{"a": 4}}
	m := newMetadataCache(next, 50*time.Millisecond)
	addr := kafka.TCP("127.0.0.1:9092")

	for range 100 {
		resp, err := m.RoundTrip(ctx, addr, metaReq("a"))
		if err != nil {
			t.Fatal(err)
		}
		if n := partitionsOf(t, resp, "a"); n != 4 {
			t.Fatalf("%d partitions, want 4", n)
		}
	}
	if next.calls != 1 {
		t.Fatalf("100 look-ups of one topic reached the transport %d times, want 1", next.calls)
	}

	// A topic that does not exist yet is asked again every time, and found
	// as soon as it exists.
	for range 3 {
		if _, err := m.RoundTrip(ctx, addr, metaReq("b")); err != nil {
			t.Fatal(err)
		}
	}
	if next.calls != 4 {
		t.Fatalf("unknown topic looked up %d times, want 3", next.calls-1)
	}
	next.topics["b"] = 2
	resp, _ := m.RoundTrip(ctx, addr, metaReq("b"))
	if n := partitionsOf(t, resp, "b"); n != 2 {
		t.Fatalf("new topic has %d partitions, want 2", n)
	}

	// Requests for several topics, and errors, pass through uncached.
	calls := next.calls
	m.RoundTrip(ctx, addr, metaReq("a", "b"))
	m.RoundTrip(ctx, addr, metaReq("a", "b"))
	if next.calls != calls+2 {
		t.Fatalf("multi-topic requests were cached")
	}

	// After the TTL a grown partition count is seen.
	next.topics["a"] = 8
	time.Sleep(60 * time.Millisecond)
	resp, _ = m.RoundTrip(ctx, addr, metaReq("a"))
	if n := partitionsOf(t, resp, "a"); n != 8 {
		t.Fatalf("after the TTL: %d partitions, want 8", n)
	}
	next.fail = errors.New("broker down")
	time.Sleep(60 * time.Millisecond)
	if _, err := m.RoundTrip(ctx, addr, metaReq("a")); err == nil {
		t.Fatal("a failed look-up after the TTL was answered from the cache")
	}
}

// BenchmarkMetadataCacheHit: the look-up kafka-go's Writer makes for every
// message, answered from the cache, from concurrent partition workers.
func BenchmarkMetadataCacheHit(b *testing.B) {
	m := newMetadataCache(&countingTransport{topics: map[string]int{"imr.push": 12}}, time.Hour)
	addr := kafka.TCP("127.0.0.1:9092")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := metaReq("imr.push")
		for pb.Next() {
			if _, err := m.RoundTrip(context.Background(), addr, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
