package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/tick"
)

// Yield lets other goroutines run every 64th time it is called with a
// growing i: loops over a batch call it once per record. Go's scheduler
// lets a goroutine run up to 10 ms before preempting it, and a goroutine
// woken by the network — an online event that just arrived — waits behind
// every runnable one; during a bulk burst that wait, at every hop, was most
// of the online lane's latency. A yield costs about 100 ns.
func Yield(i int) {
	if i&63 == 63 {
		runtime.Gosched()
	}
}

// waitLines keeps the stages of one process, which start together and
// back off in step, from logging the same wait once each.
var waitLines tick.Quiet

// Retry runs f until it succeeds, ctx ends (nil is returned then), or it
// fails with an error the brokers would give again (a Kafka error that is
// not temporary). Between attempts it waits 200 ms, doubling up to 10 s
// (tick.Backoff, jittered),
// and logs each failure with what it was doing and the brokers it tried —
// once per back-off step for the stages of a process that wait together.
func Retry(ctx context.Context, what string, brokers []string, f func() error) error {
	wait := tick.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var ke kafka.Error
		if errors.As(err, &ke) && !ke.Temporary() && !errors.Is(err, kafka.BrokerNotAvailable) {
			return fmt.Errorf("%s: %w", what, err)
		}
		// Stages waiting in step share the back-off step: one line per step.
		step := wait.Step()
		if ok, _ := waitLines.Allow(what+"\x00"+fmt.Sprint(brokers)+"\x00"+err.Error()+"\x00"+step.String(), step/2); ok {
			slog.Warn("waiting for Kafka", "doing", what, "brokers", brokers, "retry_in", step, "err", err)
		}
		if !wait.Wait(ctx) {
			return nil
		}
	}
}
