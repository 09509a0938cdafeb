package fanout

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
)

// routeEvents decides and writes the outputs of decoded (src: how each is
// taken) in one produce call through w.
func (f *Fanout) routeEvents(ctx context.Context, w *kafka.Writer, decoded []stage.Decoded[*schemas.Publish], src []routed) ([]stage.Rejected, error) {
	view, err := load(ctx, stage.Events(decoded), f.presence, f.groups, f.opts, time.Now())
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	var from [][]int // the inputs (indexes in decoded) each record derives from
	var rejected []stage.Rejected
	newTopics := map[string]int{}
	delivers, jobs := 0, 0
	var deliveredTS []int64 // ts of the events delivered
	pj := jobRecords{topic: f.env.Kafka.Topics.Push, together: f.cfg.BatchPushJobs, limit: f.limit(), headers: f.jobHeaders, binary: f.env.Kafka.Binary()}
	spec := jobSpec{limit: f.limit(), chunk: f.opts.GroupChunk, binary: f.env.Kafka.Binary()}
	presenceAt := kafka.Header{Key: HeaderPresenceAt, Value: strconv.AppendInt(nil, view.at.UnixMilli(), 10)}
	pj.headers = append(pj.headers[:len(pj.headers):len(pj.headers)], presenceAt)
	// The decisions' bytes and the deliveries' headers are cut from one
	// buffer each per batch (a slice cut before a buffer grows keeps the
	// old array), not allocated per event.
	texts := make([]byte, 0, 48*len(decoded))
	headers := make([]kafka.Header, 0, 3*len(decoded))
	for i, d := range decoded {
		ev, m := d.Event, src[i].m
		plan := Decide(ev, view, f.opts)
		if plan.Skip != "" {
			f.env.Metrics.Skipped.WithLabelValues(Stage, plan.Skip).Inc()
		}
		spec.inc = src[i].inc
		js, err := spec.jobsOf(ev, plan, m)
		if err != nil {
			rejected = append(rejected, stage.Rejected{Msg: *d.Msg, Code: schemas.ReasonOversize, Reason: err.Error()})
			continue
		}
		var trace []kafka.Header
		decision := kafka.Header{Key: HeaderDecision}
		if len(plan.Deliver) > 0 || len(js) > 0 {
			trace = traceHeaders(m, ev, src[i].inc, f.cfg.Traceparent == "derived")
			n := len(texts)
			texts = AppendDescribe(texts, ev, plan, view, f.opts)
			decision.Value = texts[n:len(texts):len(texts)]
		}
		if len(plan.Deliver) > 0 {
			n := len(headers)
			headers = append(append(headers, trace...), decision, presenceAt)
			hs := headers[n:len(headers):len(headers)]
			value := deliverRecord(ev, m, src[i].inc)
			input := []int{i}
			for _, server := range plan.Deliver {
				topic := f.env.Kafka.Topics.DeliverPrefix + server
				if !f.known(topic) {
					newTopics[topic] = f.env.Kafka.DeliverPartitions
				}
				out = append(out, kafka.Message{Topic: topic, Key: m.Key, Value: value, Headers: hs})
				from = append(from, input)
			}
			delivers += len(plan.Deliver)
			deliveredTS = append(deliveredTS, ev.TS)
		}
		for _, j := range js {
			pj.add(&ev.Header, j, i, trace, decision)
		}
		jobs += len(js)
	}
	out, from = pj.records(out, from)
	if len(newTopics) > 0 {
		created, err := f.env.Conn.CreateTopics(ctx, f.env.Kafka.ReplicationFactor, newTopics)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		for t := range newTopics {
			f.topics[t] = true
		}
		f.mu.Unlock()
		if len(created) > 0 { // the others existed (another process, or an earlier run, made them)
			f.log.Info("created deliver topics", "topics", created)
		}
	}
	start := time.Now()
	var refused map[int]error
	if len(out) > 0 {
		refused, err = kafkax.WriteRefusing(ctx, w, out...)
	}
	done := time.Now()
	if err != nil {
		if kafkax.UnknownTopic(err) {
			// A deliver topic went away (deleted, or a cluster that lost its
			// data): create the batch's topics again on the retry.
			f.mu.Lock()
			clear(f.topics)
			f.mu.Unlock()
		}
		return nil, err
	}
	rejected = append(rejected, f.refusedInputs(decoded, out, from, refused)...)
	f.env.Metrics.Produce.WithLabelValues(Stage).Observe(done.Sub(start).Seconds())
	f.outputs.WithLabelValues("deliver").Add(float64(delivers))
	f.outputs.WithLabelValues("push_job").Add(float64(jobs))
	if len(deliveredTS) > 0 { // the events delivered, not the batch's others (push jobs only)
		e2e := f.env.Metrics.E2EFor("deliver_topic")
		for _, ts := range deliveredTS {
			e2e.Observe(ts, done)
		}
	}
	return rejected, nil
}

// ReasonOutputRefused dead-letters an input one of whose outputs the
// brokers refused for a reason no retry fixes (too large, invalid).
const ReasonOutputRefused = "output_refused"

// refusedInputs returns the dead letters of the inputs whose outputs were
// refused (each input once), logged and counted (imstream_rejected_records_total
// reason output_refused, imstream_outputs_refused_total{stage,topic}). Its
// other outputs were written: a re-drive, a new event at a new offset,
// writes them again with a new src (docs/runbook.md).
func (f *Fanout) refusedInputs(decoded []stage.Decoded[*schemas.Publish], out []kafka.Message, from [][]int, refused map[int]error) []stage.Rejected {
	if len(refused) == 0 {
		return nil
	}
	why := map[int]string{}
	var order []int
	for o, err := range refused {
		f.env.Metrics.OutputRefused(Stage, out[o].Topic, err.Error())
		for _, i := range from[o] {
			if _, ok := why[i]; !ok {
				order = append(order, i)
				why[i] = fmt.Sprintf("%s record of %d bytes: %v", out[o].Topic, len(out[o].Value), err)
			}
		}
	}
	slices.Sort(order)
	rs := make([]stage.Rejected, 0, len(order))
	for _, i := range order {
		m := decoded[i].Msg
		f.log.Error("output refused by the brokers; its input goes to the dead-letter topic and the partition moves on",
			"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "reason", why[i])
		rs = append(rs, stage.Rejected{Msg: *m, Code: ReasonOutputRefused, Reason: why[i]})
	}
	return rs
}

// limit is the size every record the fanout writes stays under.
func (f *Fanout) limit() int {
	if l := f.env.Kafka.MaxRecordBytes; l > 0 {
		return l
	}
	return 256 << 10
}

func (f *Fanout) known(topic string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.topics[topic]
}
