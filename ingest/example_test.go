package ingest_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/devcmd"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// The examples run against a whole imstream started by TestMain: an
// embedded broker and a real redis-server, with presence, fanout and
// pusher running. brokers is where your Kafka would be.
var (
	brokers []string
	rc      redis.UniversalClient
	stack   config.Config
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.Admin.Listen = ""
	cfg.Kafka.Partitions = 4
	cfg.Pusher.FlushInterval = 50 * time.Millisecond
	st, err := devcmd.Up(ctx, cfg, devcmd.Options{})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = st.Env.Run(ctx, st.Runs...) }()
	brokers, rc, stack = st.Cfg.Kafka.Brokers, st.Env.Redis, st.Cfg
	code := m.Run()
	cancel()
	<-done
	st.Close()
	os.Exit(code)
}

// waitOnline waits until presence has applied uid's subscribe: only then
// does the fanout route to it (a real IM server just goes on).
func waitOnline(appid, uid int64) {
	ps := store.NewRedisPresence(rc, stack.Redis.KeyPrefix, stack.Presence.Lease, 0)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got, err := ps.Users(context.Background(), appid, []int64{uid}, time.Now()); err == nil && got[0].Online {
			return
		}
	}
	log.Fatalf("user %d never came online", uid)
}

// An IM server starts: server_up, then a heartbeat every 5 s until Close,
// which sends server_down. Subscribe when a user's first connection
// arrives, Unsubscribe when the last one leaves.
func Example_server() {
	ctx := context.Background()
	p, err := ingest.New(ctx, ingest.Config{Brokers: brokers, Server: "im-1"})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil { // server_up and the heartbeat loop
		log.Fatal(err)
	}
	if err := p.Subscribe(ctx, 7, 1001, true); err != nil {
		log.Fatal(err)
	}
	waitOnline(7, 1001)
	fmt.Println("user 1001 is online on", p.Server())
	if err := p.Unsubscribe(ctx, 7, 1001); err != nil {
		log.Fatal(err)
	}
	if err := p.Close(ctx); err != nil { // server_down
		log.Fatal(err)
	}
	// Output: user 1001 is online on im-1
}

// Messages: a peer message to a user who is offline lands in push_queue
// for the push service; Push (im_service's MSG_PUSH) asks for entries for
// whichever receivers are offline, on the bulk lane.
func ExampleProducer_Publish() {
	ctx := context.Background()
	p, err := ingest.New(ctx, ingest.Config{Brokers: brokers, Server: "im-3"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)
	msg := schemas.Message{Cmd: schemas.CmdIM, Sender: 1001, Receiver: 3003, Content: "hello"}
	if err := p.Publish(ctx, 7, 3003, msg, ingest.Meta{MsgID: 1}); err != nil {
		log.Fatal(err)
	}
	push := schemas.Message{Cmd: schemas.CmdIM, Sender: 1001, Receiver: 3004, Content: "you have mail"}
	if err := p.Push(ctx, 7, []int64{3004}, push); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		entry, err := rc.BLPop(ctx, 30*time.Second, "push_queue").Result()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(entry[1])
	}
	// Unordered output:
	// {"appid":7,"content":"hello","receiver":3003,"sender":1001}
	// {"appid":7,"content":"you have mail","receiver":3004,"sender":1001}
}

// An IM server consumes its deliver topic: a real-time message from a user
// on im-1 to a user online on im-2 arrives at im-2, once (repeats are
// dropped by src), and is committed after the handler returns.
func ExampleConsumeDeliveries() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	im1, err := ingest.New(ctx, ingest.Config{Brokers: brokers, Server: "im-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer im1.Close(ctx)
	im2, err := ingest.New(ctx, ingest.Config{Brokers: brokers, Server: "im-2"})
	if err != nil {
		log.Fatal(err)
	}
	defer im2.Close(ctx)
	if err := im2.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if err := im2.Subscribe(ctx, 7, 2002, true); err != nil {
		log.Fatal(err)
	}
	waitOnline(7, 2002)

	got := make(chan string, 1)
	go func() {
		err := ingest.ConsumeDeliveries(ctx, ingest.DeliveriesConfig{Brokers: brokers, Server: "im-2"},
			func(ctx context.Context, batch []ingest.Delivery) error {
				for _, d := range batch {
					// Hand d.Msg (or the frame in d.Msg.Raw) to the receiver's connections.
					got <- fmt.Sprintf("im-2 delivers %q from %d to %d", d.Msg.Content, d.Msg.Sender, d.Receiver)
				}
				return nil
			})
		if err != nil {
			log.Fatal(err)
		}
	}()
	rt := schemas.Message{Cmd: schemas.CmdRT, Sender: 1001, Receiver: 2002, Content: "typing"}
	if err := im1.Publish(ctx, 7, 2002, rt, ingest.Meta{}); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-got)
	// Output: im-2 delivers "typing" from 1001 to 2002
}
