package fanout

import (
	"fmt"
	"strconv"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
)

// jobSpec is how the fanout writes the push jobs of a batch.
type jobSpec struct {
	inc    string // the source partition's incarnation
	limit  int    // kafka.max_record_bytes
	chunk  int    // fanout.group_chunk: members per member-range job
	binary bool   // kafka.internal_format binary
}

// pushJob builds the idx-th push job of the event read from m. Its key names
// the source partition, which the output balancer maps to an imr.push
// partition.
func (s jobSpec) pushJob(ev *schemas.Publish, receivers, memberRange []int64, m *kafka.Message, idx int) kafka.Message {
	msg := ev.Msg
	msg.Raw = nil // the pusher does not need the frame
	h := ev.Header
	h.Type = schemas.TypePushJob
	job := schemas.PushJob{Header: h, Receivers: receivers, Msg: msg, MemberRange: memberRange,
		Src: &schemas.Source{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Index: idx, Inc: s.inc}}
	key := []byte(m.Topic + ":" + strconv.Itoa(m.Partition))
	if s.binary {
		return kafka.Message{Key: key, Value: job.AppendBinary(make([]byte, 0, 128+len(msg.Content)+(len(receivers)*10)))}
	}
	return kafka.Message{Key: key, Value: job.AppendJSON(make([]byte, 0, 256+(len(receivers)*20)))}
}

// maxJobs is how many push jobs one event may yield: a job's position is
// its source offset << 16 | its index (package pusher).
const maxJobs = 1 << 16

// jobsOf returns the push jobs of ev's plan, numbered from 0: each list of
// plan.Push as one job, cut into several where it would be over limit
// bytes, and a big group as member-range jobs of about chunk members each
// (bounds taken from its sorted member list; the first and last ranges
// are open, so that every uid falls in exactly one range whatever the
// membership is when the pusher resolves them). An event that would need
// more than maxJobs jobs is an error.
func (s jobSpec) jobsOf(ev *schemas.Publish, plan Plan, m *kafka.Message) ([]kafka.Message, error) {
	limit, chunk := s.limit, s.chunk
	if len(plan.Push) == 0 && plan.BigGroup == nil {
		return nil, nil
	}
	var jobs []kafka.Message
	n := 0
	for _, rs := range plan.Push {
		n += len(rs)
	}
	// A job is at most its event's msg and header re-encoded, src, and
	// receivers of at most 20 bytes each. Re-encoded in JSON, a JSON input
	// grows at most 6 times (escapes) and a binary one at most 12 (a field
	// of 2 bytes, tag and value, is at most `,"customer_appid":-63`);
	// re-encoded in binary, neither grows.
	grow := 6
	if stage.Format(m) != "" && !s.binary {
		grow = 12
	}
	if len(plan.Push) > 0 && grow*len(m.Value)+512+20*n <= limit {
		// The common case: every list is one job.
		for _, rs := range plan.Push {
			jobs = append(jobs, s.pushJob(ev, rs, nil, m, len(jobs)))
		}
	} else if len(plan.Push) > 0 {
		// The job without receivers, and room for its index to grow.
		base := len(s.pushJob(ev, []int64{}, nil, m, 0).Value) + 16
		for _, rs := range plan.Push {
			for len(rs) > 0 {
				n, size := 0, base
				for n < len(rs) {
					w := digits(rs[n]) + 1
					if n > 0 && size+w > limit {
						break
					}
					size += w
					n++
				}
				jobs = append(jobs, s.pushJob(ev, rs[:n:n], nil, m, len(jobs)))
				rs = rs[n:]
			}
		}
		if len(jobs) > 0 && len(jobs[0].Value) > limit { // its msg alone, escaped again, does not fit
			return nil, fmt.Errorf("record: its push job is %d bytes with one receiver, over kafka.max_record_bytes (%d)", len(jobs[0].Value), limit)
		}
	}
	if g := plan.BigGroup; g != nil {
		chunk = max(chunk, 1)
		if n := (len(g.Members) + chunk - 1) / chunk; len(jobs)+n > maxJobs {
			return nil, fmt.Errorf("record: a group of %d members yields %d push jobs of %d members, more than %d", len(g.Members), n, chunk, maxJobs)
		}
		for i := 0; i < len(g.Members); i += chunk {
			var from, to int64
			if i > 0 {
				from = g.Members[i]
			}
			if i+chunk < len(g.Members) {
				to = g.Members[i+chunk]
			}
			jobs = append(jobs, s.pushJob(ev, nil, []int64{from, to}, m, len(jobs)))
		}
	}
	if len(jobs) > maxJobs {
		return nil, fmt.Errorf("record: yields %d push jobs of at most %d bytes, more than %d", len(jobs), limit, maxJobs)
	}
	return jobs, nil
}

// digits is the length of v in decimal.
func digits(v int64) int {
	n := 1
	if v < 0 {
		n, v = 2, -v
	}
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}

// jobRecords gathers a batch's push jobs into imr.push records: with
// together, consecutive jobs of one key share a push_jobs record of at
// most limit bytes (a job alone stays a push_job record); without, each job
// is its record.
type jobRecords struct {
	topic    string
	together bool
	limit    int
	headers  []kafka.Header // on every record: the limit they were written under, the format, the presence read
	binary   bool           // the jobs are in the binary format
	jobs     []kafka.Message
	trace    [][]kafka.Header // each job's trace headers and HeaderDecision, for a job written alone
	decision []kafka.Header
	hbuf     []kafka.Header    // lone jobs' headers are cut from it
	first    []*schemas.Header // each job's event header: a push_jobs record takes its first job's
	input    []int             // each job's input index
}

// add adds job, derived from input, the event with header h, with its
// trace and decision headers: a record of the job alone carries r.headers
// and them, a push_jobs record of several jobs r.headers only (a header
// per job would grow the record past its size limit and cost the pusher
// as much again to read; its jobs' receivers are the offline ones their
// decisions found).
func (r *jobRecords) add(h *schemas.Header, job kafka.Message, input int, trace []kafka.Header, decision kafka.Header) {
	job.Topic = r.topic
	r.trace = append(r.trace, trace)
	r.decision = append(r.decision, decision)
	r.jobs = append(r.jobs, job)
	r.first = append(r.first, h)
	r.input = append(r.input, input)
}

// records appends the records to out, and the inputs each derives from to
// from.
func (r *jobRecords) records(out []kafka.Message, from [][]int) ([]kafka.Message, [][]int) {
	if !r.together {
		for i := range r.jobs {
			out, from = append(out, r.alone(i)), append(from, r.input[i:i+1:i+1])
		}
		return out, from
	}
	limit := r.limit - 256 // room for the record's header
	sep := 1               // a JSON job's comma
	if r.binary {
		sep = 4 // a binary job's tag and length (jobs are under 2 MiB)
	}
	for i := 0; i < len(r.jobs); {
		j, size := i+1, sep+len(r.jobs[i].Value)
		for j < len(r.jobs) && string(r.jobs[j].Key) == string(r.jobs[i].Key) && size+sep+len(r.jobs[j].Value) <= limit {
			size += sep + len(r.jobs[j].Value)
			j++
		}
		if j == i+1 {
			out = append(out, r.alone(i))
		} else {
			vals := make([][]byte, 0, j-i)
			for _, m := range r.jobs[i:j] {
				vals = append(vals, m.Value)
			}
			buf := make([]byte, 0, size+256)
			if r.binary {
				buf = schemas.AppendPushJobsBinary(buf, *r.first[i], vals)
			} else {
				buf = schemas.AppendPushJobs(buf, *r.first[i], vals)
			}
			out = append(out, kafka.Message{Topic: r.topic, Key: r.jobs[i].Key, Headers: r.headers, Value: buf})
		}
		from = append(from, r.input[i:j:j]) // an input with several jobs is named more than once
		i = j
	}
	return out, from
}

// alone is job i as a record of its own, with its headers.
func (r *jobRecords) alone(i int) kafka.Message {
	n := len(r.hbuf)
	r.hbuf = append(append(append(r.hbuf, r.headers...), r.trace[i]...), r.decision[i])
	j := r.jobs[i]
	j.Headers = r.hbuf[n:len(r.hbuf):len(r.hbuf)]
	return j
}
