package fanout

import (
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/schemas"
)

// TestJobRecords: consecutive jobs of one key share a push_jobs record up
// to the size limit, a job alone stays a push_job record, a new key starts
// a new record, and with batching off every job is its own record; the
// records decode to the jobs, in order.
func TestJobRecords(t *testing.T) {
	h := &schemas.Header{V: 1, Type: schemas.TypePush, Server: "im-1", AppID: 7, TS: 1}
	job := func(key string, i int) kafka.Message {
		ev := &schemas.Publish{Header: *h, Receivers: []int64{int64(100 + i)}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: int64(100 + i), Content: strings.Repeat("x", 100)}}
		m := &kafka.Message{Topic: "imr.publish.bulk", Partition: 1, Offset: int64(i)}
		j := pushJob(ev, ev.Receivers, m, "", 0)
		j.Key = []byte(key)
		return j
	}
	build := func(together bool, limit int, keys ...string) []kafka.Message {
		r := jobRecords{topic: "imr.push", together: together, limit: limit}
		for i, k := range keys {
			r.add(h, job(k, i))
		}
		return r.records(nil)
	}
	shape := func(recs []kafka.Message) string {
		var out []string
		for _, m := range recs {
			ev, err := schemas.DecodeKind(m.Value, 0, schemas.KindPushJob)
			if err != nil || m.Topic != "imr.push" {
				t.Fatalf("record %s on %s: %v", m.Value, m.Topic, err)
			}
			switch e := ev.(type) {
			case *schemas.PushJob:
				out = append(out, string(m.Key)+":1")
			case *schemas.PushJobs:
				for i, j := range e.Jobs {
					if i > 0 && j.Src.Offset <= e.Jobs[i-1].Src.Offset {
						t.Fatalf("jobs out of order in %s", m.Value)
					}
				}
				out = append(out, string(m.Key)+":"+strings.Repeat("j", len(e.Jobs)))
			}
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		together bool
		limit    int
		keys     []string
		want     string
	}{
		{true, 64 << 10, []string{"a", "a", "a"}, "a:jjj"},
		{true, 64 << 10, []string{"a"}, "a:1"},
		{true, 64 << 10, []string{"a", "a", "b", "a"}, "a:jj b:1 a:1"},
		{true, 1000, []string{"a", "a", "a", "a", "a"}, "a:jj a:jj a:1"}, // ~330 bytes a job, 744 a record
		{true, 300, []string{"a", "a"}, "a:1 a:1"},                       // a job larger than the limit goes alone
		{false, 64 << 10, []string{"a", "a", "a"}, "a:1 a:1 a:1"},
	} {
		if got := shape(build(tc.together, tc.limit, tc.keys...)); got != tc.want {
			t.Errorf("together=%v limit=%d keys=%v: %s, want %s", tc.together, tc.limit, tc.keys, got, tc.want)
		}
	}
}
