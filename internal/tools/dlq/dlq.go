// Package dlq reads the dead-letter topic and re-drives its records
// (`imstream dlq list|show|redrive`; docs/runbook.md).
//
// A re-drive writes each selected dead letter back to the topic it was
// read from (its src_topic header), or another, with its key (or, with
// Rekey, the key its body calls for) and its own headers, plus
// redriven_from naming the dead letter. It is safe to run twice:
//
//   - a push job (imr.push) is re-driven as push_job records whose src
//     stream is marked "~redrive": the pusher keeps a watermark per list and
//     stream, so entries a first re-drive appended are dropped by the second,
//     and entries other jobs appended meanwhile for the same lists (later
//     positions of the original stream) do not hide them;
//   - every other record is recorded in a ledger (a Redis set) once written,
//     and skipped when it is already there.
//
// A re-driven record that fails again is dead-lettered again with its
// redriven_from header: its history travels with it.
package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
)

// The dead-letter headers imstream writes before the record's own.
var letterHeaders = map[string]bool{"reason": true, "stage": true, "src_topic": true, "src_partition": true,
	"src_offset": true, "truncated": true, "original_size": true, "sha256": true}

// HeaderRedrivenFrom names the dead letter a re-driven record came from:
// "<dlq topic>/<partition>/<offset>".
const HeaderRedrivenFrom = "redriven_from"

// RedriveInc marks the src stream of re-driven push jobs.
const RedriveInc = "~redrive"

// Filter selects dead letters; zero fields select all.
type Filter struct {
	Reason string    // reason code, e.g. oversize
	Topic  string    // the source topic (src_topic)
	Since  time.Time // written at or after
	Until  time.Time // written before
	AppID  int64     // the record's appid, when its body decodes
	Count  int       // at most this many (0: no limit)
}

// Letter is one dead letter.
type Letter struct {
	Partition    int
	Offset       int64
	Time         time.Time
	Key, Value   []byte
	Headers      []kafka.Header // all of them
	Code, Reason string         // "oversize", "oversize: record: …"
	Stage        string
	SrcTopic     string
	SrcPartition int
	SrcOffset    int64
	Truncated    bool
	Format       string // the record's format header: "" JSON, or the binary format
	AppID        int64  // 0 when the body does not decode
}

// Own returns the record's own headers (without the dead letter's).
func (l Letter) Own() []kafka.Header {
	var out []kafka.Header
	for _, h := range l.Headers {
		if !letterHeaders[h.Key] {
			out = append(out, h)
		}
	}
	return out
}

// Coordinates names the dead letter: "<dlq topic>/<partition>/<offset>".
func (l Letter) Coordinates(dlq string) string {
	return dlq + "/" + strconv.Itoa(l.Partition) + "/" + strconv.FormatInt(l.Offset, 10)
}

func letterOf(m kafka.Message) Letter {
	l := Letter{Partition: m.Partition, Offset: m.Offset, Time: m.Time, Key: m.Key, Value: m.Value, Headers: m.Headers}
	for _, h := range m.Headers {
		v := string(h.Value)
		switch h.Key {
		case "reason":
			if l.Reason == "" {
				l.Reason = v
				l.Code, _, _ = strings.Cut(v, ":")
			}
		case "stage":
			l.Stage = v
		case "src_topic":
			l.SrcTopic = v
		case "src_partition":
			l.SrcPartition, _ = strconv.Atoi(v)
		case "src_offset":
			l.SrcOffset, _ = strconv.ParseInt(v, 10, 64)
		case "truncated":
			l.Truncated = v == "true"
		}
	}
	l.Format = stage.Format(&m)
	if ev, err := decode(m.Value, l.Format); err == nil {
		l.AppID = ev.Head().AppID
	}
	return l
}

// maxBytes bounds the records decode reads: imstream's own (push jobs) may
// be up to kafka.max_record_bytes, and a dead letter is what was rejected.
const maxBytes = 16 << 20

// decode decodes any v1 event in format ("" JSON, or the binary format).
func decode(v []byte, format string) (schemas.Event, error) {
	if format == schemas.FormatBinary {
		return schemas.DecodeBinary(v, maxBytes)
	}
	return schemas.Decode(v, maxBytes)
}

func (f Filter) match(l Letter) bool {
	return (f.Reason == "" || l.Code == f.Reason) && (f.Topic == "" || l.SrcTopic == f.Topic) &&
		(f.AppID == 0 || l.AppID == f.AppID) && (f.Until.IsZero() || l.Time.Before(f.Until))
}

// Read returns the dead letters f selects, in partition and offset order:
// each partition read from the first offset at or after f.Since (an
// offsets-by-time lookup) to its end when Read began.
func Read(ctx context.Context, conn *kafkax.Conn, topic string, f Filter) ([]Letter, error) {
	first, end, err := conn.Offsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	parts := make([]int, 0, len(end))
	for p := range end {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	var out []Letter
	for _, p := range parts {
		from := first[p]
		if !f.Since.IsZero() {
			if from, _, err = conn.OffsetsAt(ctx, topic, p, f.Since); err != nil {
				return nil, err
			}
		}
		if from < 0 || from >= end[p] {
			continue
		}
		err := conn.ReadRange(ctx, topic, p, from, end[p], 30*time.Second, func(m kafka.Message) bool {
			if l := letterOf(m); f.match(l) {
				out = append(out, l)
			}
			return f.Count == 0 || len(out) < f.Count
		})
		if err != nil {
			return nil, err
		}
		if f.Count > 0 && len(out) == f.Count {
			return out, nil
		}
	}
	return out, nil
}

// Summary counts letters by reason code and source topic, most first.
type Summary struct {
	Code, Topic string
	Count       int
	First, Last time.Time
}

// Summarize groups letters by code and source topic.
func Summarize(letters []Letter) []Summary {
	idx := map[[2]string]int{}
	var out []Summary
	for _, l := range letters {
		k := [2]string{l.Code, l.SrcTopic}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Summary{Code: l.Code, Topic: l.SrcTopic, First: l.Time})
		}
		out[i].Count++
		if l.Time.Before(out[i].First) {
			out[i].First = l.Time
		}
		if l.Time.After(out[i].Last) {
			out[i].Last = l.Time
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}

// Options configure a re-drive.
type Options struct {
	To     string // the topic to write to; "" each letter's src_topic
	Rekey  bool   // key each record as its body calls for
	DryRun bool   // select and report, write nothing
}

// Result counts what a re-drive did.
type Result struct {
	Written   int // records written (a push_jobs letter is one record per job)
	Redriven  int // letters re-driven
	Already   int // letters the ledger shows were re-driven before
	Truncated int // letters cut to 4 KiB when dead-lettered whose original is gone from its source topic: not re-driven
	Failed    int // letters whose body does not decode where it must (rekey, push jobs)
}

// Redriver re-drives dead letters.
type Redriver struct {
	Conn   *kafkax.Conn
	Kafka  config.Kafka
	Ledger redis.UniversalClient // the Redis set <prefix>dlq:redriven
	Prefix string
	Log    func(msg string, args ...any)
}

func (r *Redriver) ledgerKey() string { return r.Prefix + "dlq:redriven" }

// Redrive writes letters back (o.To or their source topics), in order.
func (r *Redriver) Redrive(ctx context.Context, letters []Letter, o Options) (Result, error) {
	var res Result
	w := r.Conn.NewWriter(r.Kafka, "")
	w.Balancer = &fanout.OutputBalancer{PushTopic: r.Kafka.Topics.Push} // push jobs where the fanout puts them
	defer w.Close()
	for _, l := range letters {
		id := l.Coordinates(r.Kafka.Topics.DLQ)
		if l.Truncated {
			orig, err := r.original(ctx, l)
			if err != nil {
				res.Truncated++
				r.Log("not re-driven: truncated when dead-lettered, and its original cannot be read", "letter", id,
					"src", fmt.Sprintf("%s/%d/%d", l.SrcTopic, l.SrcPartition, l.SrcOffset), "err", err)
				continue
			}
			l = orig
		}
		if done, err := r.Ledger.SIsMember(ctx, r.ledgerKey(), id).Result(); err != nil {
			return res, fmt.Errorf("dlq: ledger: %w", err)
		} else if done {
			res.Already++
			continue
		}
		to := o.To
		if to == "" {
			to = l.SrcTopic
		}
		msgs, err := r.records(l, to, o.Rekey)
		if err != nil {
			res.Failed++
			r.Log("not re-driven", "letter", id, "err", err)
			continue
		}
		if o.DryRun {
			res.Redriven++
			res.Written += len(msgs)
			continue
		}
		if err := kafkax.Write(ctx, w, msgs...); err != nil {
			return res, fmt.Errorf("dlq: re-drive %s to %s: %w", id, to, err)
		}
		if err := r.Ledger.SAdd(ctx, r.ledgerKey(), id).Err(); err != nil {
			return res, fmt.Errorf("dlq: ledger: %w (%s was written)", err, id)
		}
		res.Redriven++
		res.Written += len(msgs)
		r.Log("re-driven", "letter", id, "to", to, "records", len(msgs), "reason", l.Reason)
	}
	return res, nil
}

// original returns a truncated letter whole: its value and headers read
// back from its source coordinates, checked against the letter's sha256.
func (r *Redriver) original(ctx context.Context, l Letter) (Letter, error) {
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.Conn.Brokers, Dialer: r.Conn.Dialer, Topic: l.SrcTopic, Partition: l.SrcPartition, MaxBytes: 16 << 20})
	defer rd.Close()
	if err := rd.SetOffset(l.SrcOffset); err != nil {
		return l, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := rd.ReadMessage(rctx)
	if err != nil {
		return l, err
	}
	var want string
	for _, h := range l.Headers {
		if h.Key == "sha256" {
			want = string(h.Value)
		}
	}
	sum := sha256.Sum256(m.Value)
	if m.Offset != l.SrcOffset || hex.EncodeToString(sum[:]) != want {
		return l, fmt.Errorf("the record at %s/%d/%d is not the one dead-lettered (gone: retention, or a log that started again)", l.SrcTopic, l.SrcPartition, l.SrcOffset)
	}
	l.Key, l.Value, l.Truncated = m.Key, m.Value, false
	var hs []kafka.Header // the letter's own headers, then the original's
	for _, h := range l.Headers {
		if letterHeaders[h.Key] && h.Key != "truncated" && h.Key != "original_size" && h.Key != "sha256" {
			hs = append(hs, h)
		}
	}
	l.Headers = append(hs, m.Headers...)
	l.Format = stage.Format(&m)
	return l, nil
}

// records are the records re-driving l to topic writes.
func (r *Redriver) records(l Letter, topic string, rekey bool) ([]kafka.Message, error) {
	hs := append(l.Own(), kafka.Header{Key: HeaderRedrivenFrom, Value: []byte(l.Coordinates(r.Kafka.Topics.DLQ))})
	if topic == r.Kafka.Topics.Push {
		return r.pushJobs(l, topic, hs)
	}
	key := l.Key
	if rekey {
		ev, err := decode(l.Value, l.Format)
		if err != nil {
			return nil, fmt.Errorf("--rekey: %w", err)
		}
		k, ok := schemas.AppendKey(nil, ev)
		if !ok {
			return nil, fmt.Errorf("--rekey: %s has no key", ev.Head().Type)
		}
		key = k
	}
	return []kafka.Message{{Topic: topic, Key: key, Value: l.Value, Headers: hs}}, nil
}

// pushJobs re-encodes a push_job or push_jobs letter as one push_job
// record per job, in the letter's format and with its headers (the
// fanout's max_bytes among them), each with its src stream marked
// RedriveInc.
func (r *Redriver) pushJobs(l Letter, topic string, hs []kafka.Header) ([]kafka.Message, error) {
	f := l.Format
	ev, err := schemas.DecodeKindFormat(l.Value, maxBytes, schemas.KindPushJob, f)
	if err != nil {
		return nil, fmt.Errorf("push job: %w", err)
	}
	var jobs []*schemas.PushJob
	switch e := ev.(type) {
	case *schemas.PushJob:
		jobs = []*schemas.PushJob{e}
	case *schemas.PushJobs:
		jobs = e.Jobs
	}
	out := make([]kafka.Message, 0, len(jobs))
	for _, j := range jobs {
		if j.Src == nil {
			return nil, fmt.Errorf("push job without src")
		}
		src := *j.Src
		if !strings.HasSuffix(src.Inc, RedriveInc) {
			src.Inc += RedriveInc
		}
		j.Src = &src
		v := j.AppendJSON(nil)
		if f == schemas.FormatBinary {
			v = j.AppendBinary(nil)
		}
		out = append(out, kafka.Message{Topic: topic, Key: l.Key, Value: v, Headers: hs})
	}
	return out, nil
}
