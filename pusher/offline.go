package pusher

import (
	"context"
	"sort"
	"time"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// lookupChunk is how many receivers' presence one pipeline reads.
const lookupChunk = 2000

// resolveRanges turns the batch's member-range jobs (a big group's
// message, whose members the fanout left to the pusher) into ordinary jobs
// of their receivers: the group's members in the range now, minus the
// sender, that are offline now (presence read in pipelines of lookupChunk
// users). Members found online are counted (imstream_skipped_total reason
// receiver_online), and so is a group that no longer exists
// (unknown_group); such jobs yield no entry. Each attempt of a batch
// decodes its records again, so a retried batch resolves them again; what
// a job appended once, its watermark keeps.
func (p *Pusher) resolveRanges(ctx context.Context, records []stage.Decoded[schemas.Event]) error {
	var jobs []*schemas.PushJob
	for _, r := range records {
		switch ev := r.Event.(type) {
		case *schemas.PushJob:
			if ev.MemberRange != nil {
				jobs = append(jobs, ev)
			}
		case *schemas.PushJobs:
			for _, j := range ev.Jobs {
				if j.MemberRange != nil {
					jobs = append(jobs, j)
				}
			}
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	type key struct{ appid, gid int64 }
	groups := map[key]*store.Group{}
	online, unknown := 0, 0
	now := time.Now()
	for _, j := range jobs {
		k := key{j.AppID, j.Msg.Receiver}
		g, ok := groups[k]
		if !ok {
			var err error
			if g, err = p.groups.Group(ctx, k.appid, k.gid); err != nil {
				return err
			}
			groups[k] = g
		}
		j.Receivers = nil
		if g == nil {
			unknown++
			continue
		}
		members := inRange(g.Members, j.MemberRange[0], j.MemberRange[1])
		res, err := store.UsersBy(ctx, p.presence, j.AppID, members, now, lookupChunk)
		if err != nil {
			return err
		}
		for k, u := range res {
			kafkax.Yield(k) // online work first: a batch's ranges may hold 100 000 members
			switch {
			case members[k] == j.Msg.Sender:
			case u.Online:
				online++
			default:
				j.Receivers = append(j.Receivers, members[k])
			}
		}
	}
	if online > 0 {
		p.env.Metrics.Skipped.WithLabelValues(Stage, "receiver_online").Add(float64(online))
	}
	if unknown > 0 {
		p.env.Metrics.Skipped.WithLabelValues(Stage, "unknown_group").Add(float64(unknown))
	}
	return nil
}

// inRange returns the members (sorted) with from <= uid < to (to 0: no
// bound).
func inRange(members []int64, from, to int64) []int64 {
	lo := sort.Search(len(members), func(i int) bool { return members[i] >= from })
	hi := len(members)
	if to != 0 {
		hi = sort.Search(len(members), func(i int) bool { return members[i] >= to })
	}
	return members[lo:max(lo, hi)]
}
