package schemas_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/imstream/imstream/schemas"
)

// checkAppendJSON: an event's AppendJSON writes exactly json.Marshal's bytes.
func checkAppendJSON(t *testing.T, j interface{ AppendJSON([]byte) []byte }) {
	t.Helper()
	want, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if got := j.AppendJSON(nil); string(got) != string(want) {
		t.Fatalf("AppendJSON differs from json.Marshal\n got %s\nwant %s", got, want)
	}
}

func TestPushJobAppendJSONIsMarshal(t *testing.T) {
	full := &schemas.PushJob{
		Header:    schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: 7, TS: 1700000000000, ID: "im-1:42"},
		Receivers: []int64{1, -2, 9223372036854775807},
		Msg: schemas.Message{Cmd: 64, Flag: 3, Version: 1, Seq: 9, Sender: 1, Receiver: 2, Timestamp: 3, MsgID: 4,
			Content: `{"text":"<b>&</b> 你好 ` + "\u2028\u2029\x00\x1f\xff" + `"}`, Notification: "n\t\r\n\b\f\\",
			CustomerAppID: 5, CustomerID: 6, StoreID: 7, SellerID: 8, SyncKey: 10, GroupID: 11, SenderAppID: 12, ReceiverAppID: 13,
			Raw: []byte{0, 1, 2, 0xfe, 0xff}},
		Src: &schemas.Source{Topic: "imr.publish", Partition: 3, Offset: 1 << 36, Index: 2},
	}
	candidates := *full
	candidates.Receivers, candidates.MemberRange = nil, []int64{5, 0}
	for _, j := range []*schemas.PushJob{
		full,
		&candidates,
		{},
		{Receivers: []int64{}, Src: &schemas.Source{}},
		{Header: schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "a", AppID: 1}, Receivers: []int64{5}, Msg: schemas.Message{Cmd: 4, Sender: 1, Content: "hi"}},
	} {
		checkAppendJSON(t, j)
	}

	// Random jobs: every field set or zero, strings from a hostile alphabet.
	alphabet := []string{"a", "Z", "9", "<", ">", "&", `"`, `\`, "\n", "\x00", "\x7f", "\xff", "é", "你", "\u2028", "😀", "\xe4\xbd"}
	str := func(r *rand.Rand) string {
		s := ""
		for n := r.IntN(6); n > 0; n-- {
			s += alphabet[r.IntN(len(alphabet))]
		}
		return s
	}
	num := func(r *rand.Rand) int64 {
		switch r.IntN(3) {
		case 0:
			return 0
		case 1:
			return r.Int64N(1000) - 500
		}
		return r.Int64()
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		j := &schemas.PushJob{
			Header: schemas.Header{V: int(num(r)), Type: schemas.Type(str(r)), Server: str(r), AppID: num(r), TS: num(r), ID: str(r)},
			Msg: schemas.Message{Cmd: int(num(r)), Flag: int(num(r)), Version: int(num(r)), Seq: num(r), Sender: num(r),
				Receiver: num(r), Timestamp: num(r), MsgID: num(r), Content: str(r), Notification: str(r),
				CustomerAppID: num(r), CustomerID: num(r), StoreID: num(r), SellerID: num(r), SyncKey: num(r),
				GroupID: num(r), SenderAppID: num(r), ReceiverAppID: num(r)},
		}
		for n := r.IntN(4) - 1; n >= 0; n-- {
			j.Receivers = append(j.Receivers, num(r))
		}
		if r.IntN(2) == 0 {
			j.Msg.Raw = []byte(str(r))
		}
		if r.IntN(2) == 0 {
			j.Src = &schemas.Source{Topic: str(r), Partition: int(num(r)), Offset: num(r), Index: int(num(r))}
		}
		checkAppendJSON(t, j)
	}
}

// TestPublishAppendJSONIsMarshal: the gateway's and the ingest producer's
// encoder writes exactly json.Marshal's bytes, for fixed and random events.
func TestPublishAppendJSONIsMarshal(t *testing.T) {
	check := func(p *schemas.Publish) { t.Helper(); checkAppendJSON(t, p) }
	check(&schemas.Publish{})
	check(&schemas.Publish{Receivers: []int64{}, Src: &schemas.Source{}})
	check(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "imr-10.0.0.1", AppID: 7, TS: 1, ID: "x:1:2"},
		Receiver: 9, MsgID: 3, DeviceID: 4, IMRTimestamp: 1 << 60, Msg: schemas.Message{Cmd: 4, Content: "<&>", Raw: []byte{0, 255}},
		Src: &schemas.Source{Topic: "imr.publish", Partition: 2, Offset: 5, Inc: "r1"}})
	alphabet := []string{"a", "<", "&", `"`, `\`, "\n", "\x00", "\xff", "你", "\u2028", "😀"}
	r := rand.New(rand.NewPCG(3, 4))
	str := func() string {
		s := ""
		for n := r.IntN(5); n > 0; n-- {
			s += alphabet[r.IntN(len(alphabet))]
		}
		return s
	}
	num := func() int64 {
		if r.IntN(3) == 0 {
			return 0
		}
		return r.Int64() - r.Int64()
	}
	for range 5000 {
		p := &schemas.Publish{Header: schemas.Header{V: int(num()), Type: schemas.Type(str()), Server: str(), AppID: num(), TS: num(), ID: str()},
			Receiver: num(), MsgID: num(), DeviceID: num(), IMRTimestamp: num(),
			Msg: schemas.Message{Cmd: int(num()), Flag: int(num()), Seq: num(), Sender: num(), Receiver: num(), Content: str(), Notification: str(),
				SyncKey: num(), GroupID: num(), SenderAppID: num(), ReceiverAppID: num(), CustomerID: num()}}
		for n := r.IntN(4) - 1; n >= 0; n-- {
			p.Receivers = append(p.Receivers, num())
		}
		if r.IntN(2) == 0 {
			p.Msg.Raw = []byte(str())
		}
		if r.IntN(2) == 0 {
			p.Src = &schemas.Source{Topic: str(), Partition: int(num()), Offset: num(), Index: int(num()), Inc: str()}
		}
		check(p)
	}
}

// TestMemberRangeDecode: a group range job decodes with its range and no
// receivers; a bad range or receivers beside it are rejected.
func TestMemberRangeDecode(t *testing.T) {
	job := func(rng []int64, receivers []int64) []byte {
		j := &schemas.PushJob{Header: schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: 7},
			Receivers: receivers, Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 9},
			Src: &schemas.Source{Topic: "imr.publish", Partition: 1, Offset: 5, Index: 3}, MemberRange: rng}
		return j.AppendJSON(nil)
	}
	ev, err := schemas.Decode(job([]int64{1234567890123456789, 0}, nil), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.(*schemas.PushJob); len(got.MemberRange) != 2 || got.MemberRange[0] != 1234567890123456789 || len(got.Receivers) != 0 {
		t.Fatalf("decoded %+v", got)
	}
	for _, bad := range [][]byte{job([]int64{5, 5}, nil), job([]int64{1}, nil), job([]int64{-1, 0}, nil), job([]int64{0, 9}, []int64{3})} {
		if _, err := schemas.Decode(bad, 0); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// TestPresenceAppendJSONIsMarshal: the ingest encoder's presence events.
func TestPresenceAppendJSONIsMarshal(t *testing.T) {
	on, off := true, false
	h := schemas.Header{V: 1, Type: schemas.TypeSubscribe, Server: "im-1", AppID: 7, TS: 5, ID: "im-1:2:3"}
	for _, p := range []*schemas.Presence{
		{},
		{Header: h, Epoch: 2, UID: 9223372036854775807, Online: &on},
		{Header: h, Epoch: -2, UID: 1, Online: &off},
		{Header: schemas.Header{V: 1, Type: schemas.TypeSubscribeRoom, Server: "<&>", AppID: 1}, Epoch: 1, RoomID: 5},
	} {
		checkAppendJSON(t, p)
	}
}
