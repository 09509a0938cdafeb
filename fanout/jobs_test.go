package fanout

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// TestJobRecords: consecutive jobs of one key share a push_jobs record up
// to the size limit, a job alone stays a push_job record, a new key starts
// a new record, and with batching off every job is its own record; the
// records decode to the jobs, in order.
func TestJobRecords(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(formatName(binary), func(t *testing.T) { testJobRecords(t, binary) })
	}
}

func formatName(binary bool) string {
	if binary {
		return "binary"
	}
	return "json"
}

// decodeJob decodes an imr.push record the fanout wrote.
func decodeJob(m kafka.Message, limit int, binary bool) (schemas.Event, error) {
	format := ""
	if binary {
		format = schemas.FormatBinary
	}
	return schemas.DecodeKindFormat(m.Value, limit, schemas.KindPushJob, format)
}

func testJobRecords(t *testing.T, binary bool) {
	h := &schemas.Header{V: 1, Type: schemas.TypePush, Server: "im-1", AppID: 7, TS: 1}
	job := func(key string, i int) kafka.Message {
		ev := &schemas.Publish{Header: *h, Receivers: []int64{int64(100 + i)}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: int64(100 + i), Content: strings.Repeat("x", 100)}}
		m := &kafka.Message{Topic: "imr.publish.bulk", Partition: 1, Offset: int64(i)}
		j := jobSpec{binary: binary}.pushJob(ev, ev.Receivers, nil, m, 0)
		j.Key = []byte(key)
		return j
	}
	build := func(together bool, limit int, keys ...string) []kafka.Message {
		r := jobRecords{topic: "imr.push", together: together, limit: limit, binary: binary}
		for i, k := range keys {
			r.add(h, job(k, i), i, nil, kafka.Header{Key: HeaderDecision, Value: []byte(strconv.Itoa(i))})
		}
		recs, from := r.records(nil, nil)
		if len(from) != len(recs) {
			t.Fatalf("%d records, %d spans", len(recs), len(from))
		}
		next := 0
		for i, inputs := range from { // the jobs' inputs, in order
			var decisions []int // a job alone carries its decision; a push_jobs record none
			for _, hd := range recs[i].Headers {
				if hd.Key == HeaderDecision {
					n, _ := strconv.Atoi(string(hd.Value))
					decisions = append(decisions, n)
				}
			}
			if len(inputs) > 1 && len(decisions) > 0 || len(inputs) == 1 && !slices.Equal(decisions, inputs) {
				t.Fatalf("record %d of inputs %v carries the decisions of %v", i, inputs, decisions)
			}
			for _, in := range inputs {
				if in != next {
					t.Fatalf("record %d derives from inputs %v, want %d next", i, inputs, next)
				}
				next++
			}
		}
		return recs
	}
	shape := func(recs []kafka.Message) string {
		var out []string
		for _, m := range recs {
			if len(m.Value) > 64<<10 {
				t.Fatalf("a record of %d bytes", len(m.Value))
			}
			ev, err := decodeJob(m, 0, binary)
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
	// Under small two jobs fit a record and three do not; under tiny not
	// one (256 bytes are the record header's).
	jl := len(job("a", 0).Value) + 4
	small, tiny := 256+2*jl+jl/2, 256+jl/2
	for _, tc := range []struct {
		together bool
		limit    int
		keys     []string
		want     string
	}{
		{true, 64 << 10, []string{"a", "a", "a"}, "a:jjj"},
		{true, 64 << 10, []string{"a"}, "a:1"},
		{true, 64 << 10, []string{"a", "a", "b", "a"}, "a:jj b:1 a:1"},
		{true, small, []string{"a", "a", "a", "a", "a"}, "a:jj a:jj a:1"},
		{true, tiny, []string{"a", "a"}, "a:1 a:1"}, // a job larger than the limit goes alone
		{false, 64 << 10, []string{"a", "a", "a"}, "a:1 a:1 a:1"},
	} {
		if got := shape(build(tc.together, tc.limit, tc.keys...)); got != tc.want {
			t.Errorf("together=%v limit=%d keys=%v: %s, want %s", tc.together, tc.limit, tc.keys, got, tc.want)
		}
	}
}

// TestJobsOf: a long receiver list of plan.Push is cut into jobs under
// the limit, holding every receiver once in order; a 100 000-member group
// with 19-digit uids becomes member-range jobs whose ranges cover every
// uid once (open at both ends, each holding chunk members of the list
// now); every job is numbered 0, 1, … and stays under the limit.
func TestJobsOf(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(formatName(binary), func(t *testing.T) { testJobsOf(t, binary) })
	}
}

func testJobsOf(t *testing.T, binary bool) {
	ev := &schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublishGroup, Server: "im-1", AppID: 7, TS: 1},
		Receiver: 9, Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 9, Content: strings.Repeat("x", 1000)}}
	m := &kafka.Message{Topic: "imr.publish", Partition: 3, Offset: 77}
	members := make([]int64, 100000)
	for i := range members {
		members[i] = 1000000000000000000 + int64(i)*7919
	}
	decode := func(jobs []kafka.Message, limit int) []*schemas.PushJob {
		var out []*schemas.PushJob
		for i, j := range jobs {
			if len(j.Value) > limit {
				t.Fatalf("job %d is %d bytes, over the limit of %d", i, len(j.Value), limit)
			}
			ev, err := decodeJob(j, limit, binary)
			if err != nil {
				t.Fatal(err)
			}
			job := ev.(*schemas.PushJob)
			if job.Src.Index != i || job.Src.Offset != 77 {
				t.Fatalf("job %d: index %d offset %d", i, job.Src.Index, job.Src.Offset)
			}
			out = append(out, job)
		}
		return out
	}
	for _, limit := range []int{16 << 10, 64 << 10, 256 << 10} {
		jobs, err := jobSpec{inc: "r1", limit: limit, chunk: 2000, binary: binary}.jobsOf(ev, Plan{Push: [][]int64{members}}, m)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, j := range decode(jobs, limit) {
			got = append(got, j.Receivers...)
		}
		if !slices.Equal(got, members) {
			t.Fatalf("limit %d: %d receivers in %d jobs, not the %d given in order", limit, len(got), len(jobs), len(members))
		}
	}

	jobs, err := jobSpec{inc: "r1", limit: 256 << 10, chunk: 2000, binary: binary}.jobsOf(ev, Plan{BigGroup: &store.Group{AppID: 7, ID: 9, Members: members}}, m)
	if err != nil {
		t.Fatal(err)
	}
	ranges := decode(jobs, 256<<10)
	if len(ranges) != 50 {
		t.Fatalf("%d member-range jobs, want 50", len(ranges))
	}
	for i, j := range ranges {
		from, to := j.MemberRange[0], j.MemberRange[1]
		switch {
		case len(j.Receivers) != 0:
			t.Fatalf("job %d lists receivers", i)
		case i == 0 && from != 0, i == len(ranges)-1 && to != 0:
			t.Fatalf("job %d: range [%d, %d) is not open at the end", i, from, to)
		case i > 0 && from != ranges[i-1].MemberRange[1]:
			t.Fatalf("job %d starts at %d, the previous ends at %d", i, from, ranges[i-1].MemberRange[1])
		}
		n := 0
		for _, u := range members {
			if u >= from && (to == 0 || u < to) {
				n++
			}
		}
		if n != 2000 {
			t.Fatalf("job %d: %d members in range, want 2000", i, n)
		}
	}
	// More jobs than a position can number is an error, not a wrap.
	if _, err := (jobSpec{limit: 256 << 10, chunk: 1, binary: binary}).jobsOf(ev, Plan{BigGroup: &store.Group{Members: members}}, m); err == nil {
		t.Fatal("100 000 jobs of one member each: no error")
	}
}

// TestJobsOfEscapedContent: a job re-encodes its msg with encoding/json's
// escapes (a '<' is 6 bytes), so content that grows past the limit with
// even one receiver is an error (the event is dead-lettered), never a
// record over kafka.max_record_bytes.
func TestJobsOfEscapedContent(t *testing.T) {
	m := &kafka.Message{Topic: "imr.publish", Partition: 0, Offset: 1}
	for _, tc := range []struct {
		content string
		ok      bool
	}{{strings.Repeat("<", 20000), true}, {strings.Repeat("<", 60000), false}} {
		ev := &schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "im-1", AppID: 7},
			Receiver: 2, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 2, Content: tc.content}}
		m.Value = ev.AppendJSON(nil)
		jobs, err := jobSpec{limit: 256 << 10, chunk: 2000}.jobsOf(ev, Plan{Push: [][]int64{{2}}}, m)
		if (err == nil) != tc.ok {
			t.Fatalf("%d bytes of '<': err %v", len(tc.content), err)
		}
		for _, j := range jobs {
			if len(j.Value) > 256<<10 {
				t.Fatalf("a job of %d bytes", len(j.Value))
			}
		}
	}
}
