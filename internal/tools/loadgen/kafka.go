package loadgen

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/schemas"
)

// kafkaServer is a simulated IM server on the ingest library: calls are
// made by a pool of senders (the library blocks per call until acked), and
// deliveries are read from its deliver topic and shown as imr frames.
type kafkaServer struct {
	p      *ingest.Producer
	work   chan func() error
	mu     sync.Mutex
	idle   *sync.Cond // signalled when pending drops to 0; a WaitGroup would panic on Add during a Wait
	busy   int        // calls handed to the senders and not yet finished
	err    error
	out    chan imr.Frame
	cancel context.CancelFunc
}

func newKafkaServer(p *ingest.Producer, brokers []string, deliverTopic string) *kafkaServer {
	ctx, cancel := context.WithCancel(context.Background())
	s := &kafkaServer{p: p, work: make(chan func() error, 4096), out: make(chan imr.Frame, 1<<16), cancel: cancel}
	s.idle = sync.NewCond(&s.mu)
	for i := 0; i < 64; i++ {
		go func() {
			for f := range s.work {
				err := f()
				s.mu.Lock()
				if err != nil {
					s.err = err
				}
				if s.busy--; s.busy == 0 {
					s.idle.Broadcast()
				}
				s.mu.Unlock()
			}
		}()
	}
	go s.consume(ctx, brokers, deliverTopic)
	return s
}

func (s *kafkaServer) do(f func() error) error {
	s.mu.Lock()
	s.busy++
	s.mu.Unlock()
	s.work <- f
	return nil
}

func (s *kafkaServer) subscribe(appid, uid int64, online bool) error {
	return s.do(func() error { return s.p.Subscribe(context.Background(), appid, uid, online) })
}
func (s *kafkaServer) unsubscribe(appid, uid int64) error {
	return s.do(func() error { return s.p.Unsubscribe(context.Background(), appid, uid) })
}
func (s *kafkaServer) rt(appid, to int64, m schemas.Message) error {
	return s.do(func() error { return s.p.Publish(context.Background(), appid, to, m, ingest.Meta{}) })
}
func (s *kafkaServer) push(appid int64, receivers []int64, m schemas.Message) error {
	return s.do(func() error { return s.p.Push(context.Background(), appid, receivers, m) })
}

func (s *kafkaServer) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.busy > 0 {
		s.idle.Wait()
	}
	return s.err
}

func (s *kafkaServer) frames() <-chan imr.Frame { return s.out }

func (s *kafkaServer) close() {
	_ = s.flush()
	close(s.work)
	s.cancel()
	_ = s.p.Close(context.Background())
}

func (s *kafkaServer) consume(ctx context.Context, brokers []string, topic string) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "loadgen-" + topic, Topic: topic,
		MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.LastOffset})
	defer r.Close()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return
		}
		var p schemas.Publish
		if json.Unmarshal(m.Value, &p) != nil {
			continue
		}
		body := imr.AppendRoute(nil, imr.Route{AppID: p.AppID, Receiver: p.Receiver, Inner: imr.AppendInner(nil, p.Msg)})
		select {
		case s.out <- imr.Frame{Cmd: imr.CmdPublish, Body: body}:
		case <-ctx.Done():
			return
		}
	}
}
