package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// bigGroupMembers is the size of TestBigGroups' groups.
const bigGroupMembers = 100_000

// TestBigGroups: groups of 100 000 members, with 7-digit and with 19-digit
// uids, built with group_create and one group_member_add per member, 10 %
// online on three IM servers; 20 GROUP_IM to each: every offline member
// except the sender is in group_push_queue for every message exactly once
// (spread over several entries of im_service's format), nothing is
// dead-lettered, and no batch is retried more than once.
func TestBigGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("100 000-member groups")
	}
	s := startStack(t, 1, 1)
	ctx := context.Background()
	ids := []string{"im-1", "im-2", "im-3"}
	for _, id := range ids {
		p := imServer(t, s.cfg, id, 1)
		t.Cleanup(func() { _ = p.Close(context.Background()) })
	}
	topics := ingest.Topics{Presence: s.cfg.Kafka.Topics.Presence, Publish: s.cfg.Kafka.Topics.Publish, Bulk: s.cfg.Kafka.Topics.Bulk}
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	for g, base := range []int64{1_000_000, 1_000_000_000_000_000_000} {
		gid := int64(9000 + g)
		key := []byte(fmt.Sprintf("%d:%d", app, gid))
		groupEv := func(ev *schemas.Group) kafkaMessage {
			ev.Header = schemas.Header{V: 1, Type: ev.Type, Server: "backend", AppID: app}
			ev.GroupID = gid
			b, _ := json.Marshal(ev)
			return kafkaMessage{Topic: s.cfg.Kafka.Topics.Groups, Key: key, Value: b}
		}
		msgs := []kafkaMessage{groupEv(&schemas.Group{Header: schemas.Header{Type: schemas.TypeGroupCreate}})}
		var presence []kafkaMessage
		offline := map[int64]bool{}
		sender := base + 1 // offline: it must not get its own message
		for i := int64(0); i < bigGroupMembers; i++ {
			uid := base + i*7
			if i == 1 {
				uid = sender
			}
			msgs = append(msgs, groupEv(&schemas.Group{Header: schemas.Header{Type: schemas.TypeGroupMemberAdd}, UID: uid}))
			if i%10 == 0 {
				r := ingest.NewEncoder(ids[(i/10)%3], 1, topics).Subscribe(app, uid, true)
				presence = append(presence, kafkaMessage{Topic: r.Topic, Key: []byte(r.Key), Value: r.Value})
			} else if uid != sender {
				offline[uid] = true
			}
		}
		testkit.Produce(t, s.cfg, presence...)
		testkit.Produce(t, s.cfg, msgs...)
		last := base + (bigGroupMembers-10)*7
		testkit.Eventually(t, 2*time.Minute, "the group built and its online members present", func() bool {
			on, _ := s.online(t, last)
			return on && rc.SCard(ctx, fmt.Sprintf("%sg:{%d:%d}:m", s.cfg.Redis.KeyPrefix, app, gid)).Val() == bigGroupMembers
		})

		start := time.Now()
		im := ingest.NewEncoder("im-1", 1, topics)
		var sends []kafkaMessage
		for k := 0; k < 20; k++ {
			r := im.PublishGroup(app, gid, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: sender, Receiver: gid, Content: fmt.Sprintf("big-%d-%d", g, k)}, ingest.Meta{})
			sends = append(sends, kafkaMessage{Topic: r.Topic, Key: []byte(r.Key), Value: r.Value})
		}
		testkit.Produce(t, s.cfg, sends...)
		got := map[string]map[int64]int{}
		entries := 0
		testkit.Eventually(t, 5*time.Minute, "every offline member's entries of 20 messages", func() bool {
			vals := rc.LRange(ctx, "group_push_queue", int64(entries), -1).Val()
			for _, v := range vals {
				var e struct {
					AppID     int64   `json:"appid"`
					Content   string  `json:"content"`
					GroupID   int64   `json:"group_id"`
					Receivers []int64 `json:"receivers"`
					Sender    int64   `json:"sender"`
				}
				must(t, json.Unmarshal([]byte(v), &e))
				if e.GroupID != gid || e.Sender != sender || e.AppID != app {
					t.Fatalf("entry of group %d sender %d app %d, want %d %d %d", e.GroupID, e.Sender, e.AppID, gid, sender, app)
				}
				if got[e.Content] == nil {
					got[e.Content] = map[int64]int{}
				}
				for _, r := range e.Receivers {
					got[e.Content][r]++
				}
			}
			entries += len(vals)
			n := 0
			for _, rs := range got {
				n += len(rs)
			}
			return n >= 20*len(offline)
		})
		t.Logf("%d-digit uids: 20 messages to %d members → %d entries, all written %s after they were sent",
			len(strconv.FormatInt(base, 10)), bigGroupMembers, entries, time.Since(start).Round(time.Millisecond))
		// Nothing more arrives: the fanout and the pusher committed past
		// every record.
		testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Publish, 2*time.Minute)
		testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 2*time.Minute)
		if extra := rc.LLen(ctx, "group_push_queue").Val() - int64(entries); extra != 0 {
			t.Errorf("%d more entries after every receiver had one", extra)
		}
		if len(got) != 20 {
			t.Errorf("entries for %d messages, want 20", len(got))
		}
		for content, rs := range got {
			for r, n := range rs {
				if !offline[r] || n != 1 {
					t.Fatalf("%s: receiver %d has %d entries (offline member: %v)", content, r, n, offline[r])
				}
			}
			if len(rs) != len(offline) {
				t.Fatalf("%s: %d receivers, want the %d offline members", content, len(rs), len(offline))
			}
		}
		must(t, rc.Del(ctx, "group_push_queue").Err())
	}
	if dl := deadLetters(t, s); len(dl) != 0 {
		t.Errorf("dead letters: %v", dl)
	}
	admins := append(append([]string{}, s.fanout...), s.pusher)
	if n := metric(t, admins, `imstream_batch_retries_total{stage="fanout"}`) + metric(t, admins, `imstream_batch_retries_total{stage="pusher"}`); n > 1 {
		t.Errorf("%v batches retried", n)
	}
}
