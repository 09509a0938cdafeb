package pusher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
)

// reference builds the entry the way im_service does (its push code): a map
// marshalled by encoding/json.
func reference(appid int64, job *schemas.PushJob) map[string][]string {
	m := job.Msg
	out := map[string][]string{}
	add := func(list string, v map[string]any) {
		b, _ := json.Marshal(v)
		out[list] = append(out[list], string(b))
	}
	for _, r := range job.Receivers {
		switch m.Cmd {
		case schemas.CmdIM:
			add("push_queue", map[string]any{"appid": appid, "sender": m.Sender, "receiver": r, "content": m.Content})
		case schemas.CmdCustomer, schemas.CmdCustomerSupport:
			add("customer_push_queue", map[string]any{"appid": appid, "receiver": r, "command": m.Cmd, "customer_appid": m.CustomerAppID,
				"customer": m.CustomerID, "seller": m.SellerID, "store": m.StoreID, "content": m.Content})
		case schemas.CmdCustomerV2:
			add("customer_push_queue_v2", map[string]any{"appid": appid, "receiver": r, "sender_appid": m.SenderAppID, "sender": m.Sender,
				"receiver_appid": m.ReceiverAppID, "content": m.Content})
		case schemas.CmdSystem:
			add("system_push_queue", map[string]any{"appid": appid, "receiver": r, "content": m.Notification})
		}
	}
	if m.Cmd == schemas.CmdGroupIM {
		add("group_push_queue", map[string]any{"appid": appid, "sender": m.Sender, "receivers": job.Receivers, "content": m.Content, "group_id": m.Receiver})
	}
	return out
}

func encode(job *schemas.PushJob, enc *pusher.Encoder) map[string][]string {
	out := map[string][]string{}
	for _, e := range enc.Append(nil, job, "t", "", 0, 1) {
		out[e.List] = append(out[e.List], string(e.Data))
	}
	return out
}

var contents = []string{"", "plain", `{"text":"hi"}`, "<b>&amp;</b>", "tab\tnl\ncr\r\b\f\x00\x1f", "\u2028\u2029", "中文 emoji 😀", "bad utf8 \xff\xfe", "\\ backslash \"quote\"", "\x7f del"}

func TestEncoderMatchesImService(t *testing.T) {
	enc := &pusher.Encoder{SystemPush: true}
	for _, cmd := range []int{4, 8, 21, 24, 25, 64} {
		for i, c := range contents {
			job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: []int64{1001, 1002},
				Msg: schemas.Message{Cmd: cmd, Sender: -3, Receiver: 55, Content: c, Notification: c,
					CustomerAppID: 1, CustomerID: 2, StoreID: 3, SellerID: 4, SenderAppID: 5, ReceiverAppID: 6}}
			got, want := encode(job, enc), reference(7, job)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("cmd %d content %d:\n got %q\nwant %q", cmd, i, got, want)
			}
		}
	}
}

func TestEncoderLists(t *testing.T) {
	on := &pusher.Encoder{ROMApps: map[int64]bool{9: true}, SystemPush: true}
	off := &pusher.Encoder{ROMApps: map[int64]bool{9: true}}
	tests := []struct {
		cmd   int
		appid int64
		want  string
	}{
		{4, 7, "push_queue"}, {4, 9, "push_queue_9"},
		{8, 7, "group_push_queue"}, {8, 9, "group_push_queue_9"},
		{24, 9, "customer_push_queue"}, {25, 9, "customer_push_queue"},
		{64, 7, "customer_push_queue_v2"}, {64, 9, "customer_push_queue_v2_9"},
		{21, 9, "system_push_queue"},
	}
	for _, tt := range tests {
		job := &schemas.PushJob{Header: schemas.Header{AppID: tt.appid}, Receivers: []int64{1}, Msg: schemas.Message{Cmd: tt.cmd}}
		es := on.Append(nil, job, "t", "", 0, 0)
		if len(es) != 1 || es[0].List != tt.want {
			t.Errorf("cmd %d app %d: %+v, want list %s", tt.cmd, tt.appid, es, tt.want)
		}
		if n := len(off.Append(nil, job, "t", "", 0, 0)); (tt.cmd == 21) != (n == 0) {
			t.Errorf("cmd %d with system push off: %d entries", tt.cmd, n)
		}
	}
}

func FuzzEncoder(f *testing.F) {
	for _, c := range contents {
		f.Add(c, int64(7), int64(1001))
	}
	enc := &pusher.Encoder{SystemPush: true}
	f.Fuzz(func(t *testing.T, content string, appid, receiver int64) {
		for _, cmd := range []int{4, 8, 21, 24, 64} {
			job := &schemas.PushJob{Header: schemas.Header{AppID: appid}, Receivers: []int64{receiver},
				Msg: schemas.Message{Cmd: cmd, Sender: appid ^ receiver, Receiver: receiver, Content: content, Notification: content}}
			got, want := encode(job, enc), reference(appid, job)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("cmd %d:\n got %q\nwant %q", cmd, got, want)
			}
		}
	})
}

// TestMemorySinkExactlyOnce: the memory sink follows the Sink contract
// (replays and overlapping batches append nothing twice).
func TestMemorySinkExactlyOnce(t *testing.T) {
	s := pusher.NewMemorySink()
	ctx := context.Background()
	batch := func(from, to int64) []pusher.Entry {
		var es []pusher.Entry
		for o := from; o <= to; o++ {
			es = append(es, pusher.Entry{List: "l", SrcTopic: "t", Pos: o, Data: []byte(fmt.Sprint(o))})
			es = append(es, pusher.Entry{List: "l", SrcTopic: "t", Pos: o, Data: []byte(fmt.Sprint(o, "b"))})
		}
		return es
	}
	for _, b := range [][2]int64{{0, 4}, {0, 4}, {3, 7}, {8, 9}, {5, 9}} {
		if err := s.Append(ctx, batch(b[0], b[1])); err != nil {
			t.Fatal(err)
		}
	}
	got := s.List("l")
	if len(got) != 20 {
		t.Fatalf("got %d entries, want 20: %v", len(got), got)
	}
	for i, v := range got {
		want := fmt.Sprint(i / 2)
		if i%2 == 1 {
			want += "b"
		}
		if v != want {
			t.Fatalf("entry %d = %s, want %s", i, v, want)
		}
	}
	// A job re-produced in the same call as the original (its entries
	// share Pos, the replay has another Job) is appended once.
	twice := batch(10, 11)
	for i := range twice {
		twice[i].Job = 1
	}
	replay := batch(10, 12)
	for i := range replay {
		replay[i].Job = 2
	}
	if err := s.Append(ctx, append(twice, replay...)); err != nil {
		t.Fatal(err)
	}
	if got := s.List("l")[20:]; fmt.Sprint(got) != "[10 10b 11 11b 12 12b]" {
		t.Fatalf("in-call replay: %v", got)
	}
	// Another partition has its own watermark.
	es := batch(0, 0)
	for i := range es {
		es[i].SrcPartition = 1
	}
	_ = s.Append(ctx, es)
	if n := len(s.List("l")); n != 28 {
		t.Fatalf("partition 1 entries not appended: %d", n)
	}
}
