package kafkax

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// metadataCache is the writers' transport: it answers the one-topic
// metadata request kafka-go's Writer makes for every message it is given
// (Writer.partitions, to count the topic's partitions) from a short-lived
// cache, and passes everything else through. kafka.Transport caches
// metadata too, but still builds, filters and copies a response per call:
// in `imstream bench` that was half of all the fanout's producing CPU.
//
// Only answers naming the topic without error are cached, so a topic that
// does not exist yet is looked up again on the next message; a partition
// count that grows is seen within ttl.
type metadataCache struct {
	next kafka.RoundTripper
	ttl  time.Duration

	entries sync.Map // metaKey → metaEntry; read-mostly, so look-ups share no lock
}

type metaKey struct {
	topic      string
	autoCreate bool
}

type metaEntry struct {
	resp    *metadataAPI.Response
	expires time.Time
}

func newMetadataCache(next kafka.RoundTripper, ttl time.Duration) *metadataCache {
	return &metadataCache{next: next, ttl: ttl}
}

// RoundTrip implements kafka.RoundTripper.
func (m *metadataCache) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	r, ok := req.(*metadataAPI.Request)
	if !ok || len(r.TopicNames) != 1 {
		return m.send(ctx, addr, req)
	}
	// A hit is answered before anything else: this runs for every message
	// a writer is given (a context with a timer here cost 8 % of a role's
	// CPU under load).
	key := metaKey{topic: r.TopicNames[0], autoCreate: r.AllowAutoTopicCreation}
	now := time.Now()
	if e, hit := m.entries.Load(key); hit && now.Before(e.(metaEntry).expires) {
		return e.(metaEntry).resp, nil
	}
	resp, err := m.send(ctx, addr, req)
	if err != nil {
		return resp, err
	}
	if mr, ok := resp.(*metadataAPI.Response); ok && cacheable(mr, key.topic) {
		m.entries.Store(key, metaEntry{resp: mr, expires: now.Add(m.ttl)})
	}
	return resp, nil
}

// send passes req on. kafka-go's writer sends its metadata requests with
// the caller's context: without a deadline, a broker that stops answering
// on an open connection would hold every later write forever, so a request
// without one gets requestTimeout.
func (m *metadataCache) send(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	return m.next.RoundTrip(ctx, addr, req)
}

// requestTimeout bounds a writer request sent without a deadline.
const requestTimeout = 10 * time.Second

func cacheable(r *metadataAPI.Response, topic string) bool {
	for _, t := range r.Topics {
		if t.Name == topic {
			return t.ErrorCode == 0 && len(t.Partitions) > 0
		}
	}
	return false
}
