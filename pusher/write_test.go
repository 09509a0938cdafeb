package pusher

import (
	"context"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// TestPushJobsRecords: a push_jobs record yields the entries of its jobs,
// in order, exactly as the same jobs one record each; and whichever form a
// replay takes — the fanout regroups its jobs after a crash, or a fanout
// with fanout.batch_push_jobs off replays what one with it on wrote —
// nothing is appended twice.
func TestPushJobsRecords(t *testing.T) {
	cfg := config.Default()
	sink := NewMemorySink()
	p, err := New(cfg.Pusher, testkit.StageEnv(cfg), sink, store.NewMemoryPresence(cfg.Presence.Lease), store.NewMemoryGroups(), nil)
	if err != nil {
		t.Fatal(err)
	}
	jobs := make([][]byte, 5)
	for i := range jobs {
		j := schemas.PushJob{Header: schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: 7, TS: 1},
			Receivers: []int64{int64(100 + i)}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: int64(100 + i), Content: fmt.Sprint("m", i)},
			Src: &schemas.Source{Topic: "imr.publish.bulk", Partition: 2, Offset: int64(40 + i)}}
		jobs[i] = j.AppendJSON(nil)
	}
	h := schemas.Header{V: 1, Server: "im-1", AppID: 7, TS: 1}
	write := func(offset int64, values ...[]byte) {
		t.Helper()
		var decoded []stage.Decoded[schemas.Event]
		for i, v := range values {
			ev, err := schemas.DecodeKind(v, 0, schemas.KindPushJob)
			if err != nil {
				t.Fatal(err)
			}
			m := &kafka.Message{Topic: "imr.push", Partition: 0, Offset: offset + int64(i), Value: v}
			decoded = append(decoded, stage.Decoded[schemas.Event]{Event: ev, Msg: m})
		}
		if _, err := p.write(context.Background(), stage.Batch{}, decoded); err != nil {
			t.Fatal(err)
		}
	}
	write(10, schemas.AppendPushJobs(nil, h, jobs[:3]), jobs[3])                              // jobs 0-2 together, 3 alone
	write(20, schemas.AppendPushJobs(nil, h, jobs[1:5]))                                      // a replay regrouped: only 4 is new
	write(30, jobs[0], jobs[1], jobs[2], jobs[3], jobs[4])                                    // a replay one by one: nothing new
	write(40, schemas.AppendPushJobs(nil, h, jobs), schemas.AppendPushJobs(nil, h, jobs[2:])) // nothing new
	got := sink.List("push_queue")
	if len(got) != 5 {
		t.Fatalf("%d entries, want 5: %q", len(got), got)
	}
	for i, e := range got {
		if want := fmt.Sprintf(`{"appid":7,"content":"m%d","receiver":%d,"sender":1}`, i, 100+i); e != want {
			t.Errorf("entry %d = %s, want %s", i, e, want)
		}
	}

	// Jobs without src (other tools) take the record's position, numbered:
	// both are written, once, however often the record is read.
	var bare [][]byte
	for i := 0; i < 2; i++ {
		j := schemas.PushJob{Header: h, Receivers: []int64{200}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 200, Content: fmt.Sprint("b", i)}}
		j.Type = schemas.TypePushJob
		bare = append(bare, j.AppendJSON(nil))
	}
	write(50, schemas.AppendPushJobs(nil, h, bare))
	write(50, schemas.AppendPushJobs(nil, h, bare))
	if got := sink.List("push_queue"); len(got) != 7 || got[5] != `{"appid":7,"content":"b0","receiver":200,"sender":1}` || got[6] != `{"appid":7,"content":"b1","receiver":200,"sender":1}` {
		t.Errorf("jobs without src: %q", got[5:])
	}
}
