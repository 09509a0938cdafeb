package pusher

import (
	"context"
	"time"

	"github.com/imstream/imstream/internal/stage"
	"github.com/imstream/imstream/schemas"
)

// lookupChunk is how many receivers' presence one pipeline reads.
const lookupChunk = 2000

// keepOffline turns the batch's if_offline jobs (a big group's members,
// whose presence the fanout left to the pusher) into ordinary jobs of
// their offline receivers, read now, in pipelines of lookupChunk users;
// the online ones are counted (imstream_skipped_total reason
// receiver_online). A job whose receivers are all online yields no entry.
// Each attempt of a batch decodes its records again, so a retried batch
// looks presence up again; what a job appended once its watermark keeps.
func (p *Pusher) keepOffline(ctx context.Context, records []stage.Decoded[schemas.Event]) error {
	var jobs []*schemas.PushJob
	for _, r := range records {
		switch ev := r.Event.(type) {
		case *schemas.PushJob:
			if ev.IfOffline {
				jobs = append(jobs, ev)
			}
		case *schemas.PushJobs:
			for _, j := range ev.Jobs {
				if j.IfOffline {
					jobs = append(jobs, j)
				}
			}
		}
	}
	online := 0
	now := time.Now()
	for _, j := range jobs {
		keep := j.Receivers[:0:0]
		for i := 0; i < len(j.Receivers); i += lookupChunk {
			uids := j.Receivers[i:min(i+lookupChunk, len(j.Receivers))]
			res, err := p.presence.Users(ctx, j.AppID, uids, now)
			if err != nil {
				return err
			}
			for k, u := range res {
				if u.Online {
					online++
				} else {
					keep = append(keep, uids[k])
				}
			}
		}
		j.Receivers, j.IfOffline = keep, false
	}
	if online > 0 {
		p.env.Metrics.Skipped.WithLabelValues(Stage, "receiver_online").Add(float64(online))
	}
	return nil
}
