package stage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// group is a group_create record of gid under key.
func group(gid int64, key string) kafka.Message {
	v, _ := json.Marshal(&schemas.Group{Header: schemas.Header{V: 1, Type: schemas.TypeGroupCreate, Server: "backend", AppID: 7}, GroupID: gid})
	return kafka.Message{Key: []byte(key), Value: v}
}

// TestDecodeBatch: valid records come back in order with their records; a
// record that does not decode, one keyed against its body and one over the
// size limit are rejected with their codes; imstream's own records (header
// max_bytes) are checked against the limit they were written under, up to
// OwnMaxBytes; with AcceptKeyMismatch a mismatch is kept and reported.
func TestDecodeBatch(t *testing.T) {
	padded := func(n int, limit string) kafka.Message {
		m := group(3, "7:3")
		m.Value = append(m.Value[:len(m.Value)-1], []byte(`,"pad":"`+strings.Repeat("x", n)+`"}`)...)
		if limit != "" {
			m.Headers = []kafka.Header{{Key: stage.HeaderMaxBytes, Value: []byte(limit)}}
		}
		return m
	}
	records := []kafka.Message{group(1, "7:1"), {Key: []byte("7:2"), Value: []byte("{")}, group(2, "7:9"),
		padded(2000, ""),        // anyone's: schemas.max_bytes
		padded(2000, "4096"),    // imstream's own, written under 4096
		padded(2000, "1500"),    // written under 1500: over it
		padded(4000, "1000000"), // a header that lies: capped at OwnMaxBytes
	}
	for i := range records {
		records[i].Offset = int64(i)
	}
	mismatches := 0
	d := stage.Decoder{MaxBytes: 1024, OwnMaxBytes: 3072, OnKeyMismatch: func(bool) { mismatches++ }}
	ok, rejected := stage.DecodeBatch[*schemas.Group](records, d, schemas.KindGroup)
	var got []string
	for _, r := range ok {
		got = append(got, fmt.Sprintf("%d@%d", r.Event.GroupID, r.Msg.Offset))
	}
	var codes []string
	for _, r := range rejected {
		codes = append(codes, fmt.Sprintf("%s@%d", r.Code, r.Msg.Offset))
	}
	if fmt.Sprint(got) != "[1@0 3@4]" || fmt.Sprint(codes) != "[invalid_json@1 key_mismatch@2 oversize@3 oversize@5 oversize@6]" || mismatches != 1 {
		t.Fatalf("valid %v, rejected %v, %d mismatches", got, codes, mismatches)
	}
	d.AcceptKeyMismatch = true
	ok, _ = stage.DecodeBatch[*schemas.Group](records[2:3], d, schemas.KindGroup)
	if len(ok) != 1 || mismatches != 2 {
		t.Fatalf("accepting: %d kept, %d mismatches", len(ok), mismatches)
	}
}

// TestDeclare: a stage missing collaborators is refused with their names;
// a declared one exports its consumed-records family at 0.
func TestDeclare(t *testing.T) {
	env := testkit.StageEnv(config.Default())
	_, err := stage.Declare(&env, stage.Declaration{Name: "s", Needs: []stage.Need{{Name: "Store", OK: false}, {Name: "Sink", OK: true}}})
	if err == nil || err.Error() != "s: missing Store" {
		t.Fatalf("err = %v", err)
	}
	c, err := stage.Declare(&env, stage.Declaration{Name: "s", Input: stage.Input{Topics: []string{"t1", "t2"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := testutil.CollectAndCount(env.Metrics.Consumed); n != 2 {
		t.Fatalf("%d consumed series, want 2 (t1, t2) at 0", n)
	}
	if env.Logger == nil {
		t.Fatal("Declare did not fill in the default logger")
	}
}

// TestRun: against a real broker, Run creates the declared topic, hands
// apply the valid events of each partition in order, dead-letters the
// invalid ones and what apply rejects, retries a batch whose apply failed
// (counted), and commits only what was applied.
func TestRun(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	cfg.Kafka.Partitions = 1
	env := testkit.StageEnvOn(cfg)
	in := stage.Input{Group: "g", Topics: []string{"in"}, Kind: schemas.KindGroup, MaxBatch: 10}
	c, err := stage.Declare(&env, stage.Declaration{Name: "s", Input: in})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []int64
	failOnce := true
	apply := func(ctx context.Context, b stage.Batch, evs []stage.Decoded[*schemas.Group]) ([]stage.Rejected, error) {
		mu.Lock()
		defer mu.Unlock()
		if failOnce {
			failOnce = false
			return nil, errors.New("store down")
		}
		var rej []stage.Rejected
		for _, e := range evs {
			if e.Event.GroupID == 13 {
				rej = append(rej, stage.Rejected{Msg: *e.Msg, Code: "unlucky", Reason: "13"})
				continue
			}
			got = append(got, e.Event.GroupID)
		}
		return rej, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stage.Run(ctx, c, apply) }()
	msgs := []kafka.Message{group(1, "7:1"), {Key: []byte("7:2"), Value: []byte("nope")}, group(13, "7:13"), group(3, "7:3")}
	for i := range msgs {
		msgs[i].Topic = "in"
	}
	testkit.Produce(t, cfg, msgs...)
	testkit.Eventually(t, 30*time.Second, "two dead letters", func() bool { return len(testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ)) == 2 })
	testkit.WaitCaughtUp(t, cfg, "g", "in", 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[1 3]" {
		t.Fatalf("applied %v, want [1 3]", got)
	}
	var reasons []string
	for _, m := range testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ) {
		for _, h := range m.Headers {
			if h.Key == "reason" {
				reasons = append(reasons, strings.SplitN(string(h.Value), ":", 2)[0])
			}
		}
	}
	if fmt.Sprint(reasons) != "[invalid_json unlucky]" {
		t.Fatalf("dead letters %v", reasons)
	}
	if n := testutil.ToFloat64(env.Metrics.Retries.WithLabelValues("s")); n != 1 {
		t.Fatalf("%v retries, want 1", n)
	}
}
