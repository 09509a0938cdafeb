package schemas

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// binaryOf encodes every field JSON decoding put in w, jobs included, in
// the binary format: the reference the typed encoders are checked against,
// and a way to put invalid events (which no typed encoder writes) in the
// binary format.
func binaryOf(t testing.TB, w *wire) []byte {
	t.Helper()
	b := w.Header.appendBinary(nil)
	b = appendSint(b, fEpoch, w.Epoch)
	b = appendSint(b, fUID, w.UID)
	b = appendOptBool(b, fOnline, w.Online)
	b = appendSint(b, fRoomID, w.RoomID)
	b = appendSint(b, fReceiver, w.Receiver)
	b = appendSint(b, fMsgID, w.MsgID)
	b = appendSint(b, fDeviceID, w.DeviceID)
	b = appendPacked(b, fReceivers, w.Receivers)
	if w.Msg != nil {
		b = appendNested(b, fMsg, w.Msg.appendBinary)
	}
	b = w.Src.appendBinary(b)
	b = appendSint(b, fIMRTimestamp, w.IMRTS)
	b = appendSint(b, fGroupID, w.GroupID)
	b = appendBool(b, fSuper, w.Super)
	b = appendPacked(b, fMembers, w.Members)
	b = appendBool(b, fMute, w.Mute)
	for _, j := range w.Jobs {
		var jw wire
		if err := json.Unmarshal(j, &jw); err != nil {
			t.Fatalf("job %s: %v", j, err)
		}
		b = protowire.AppendBytes(protowire.AppendTag(b, fJobs, protowire.BytesType), binaryOf(t, &jw))
	}
	b = appendPacked(b, fMemberRange, w.MemberRange)
	b = appendOptBool(b, fOnlineOnly, w.OnlineOnly)
	b = appendBool(b, fExclOrigin, w.ExclOrigin)
	return appendStr(b, fRoute, w.Route)
}

// TestBinaryMeansJSON: every example record, valid or not, put in the
// binary format decodes to the same event, or fails with the same error,
// as its JSON.
func TestBinaryMeansJSON(t *testing.T) {
	files, _ := filepath.Glob("v1/examples/*/*.json")
	if len(files) < 20 {
		t.Fatalf("%d examples", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var w wire
			if err := json.Unmarshal(raw, &w); err != nil {
				t.Skipf("not expressible in the binary format (%v)", err) // a JSON type error: the binary format has types
			}
			bin := binaryOf(t, &w)
			if len(bin) > len(raw) {
				t.Errorf("binary %d bytes, JSON %d", len(bin), len(raw))
			}
			want, wantErr := Decode(raw, 0)
			got, gotErr := DecodeBinary(bin, 0)
			if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
				t.Fatalf("binary: %v, JSON: %v", gotErr, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("binary decodes to %+v, JSON to %+v", got, want)
			}
		})
	}
}

// TestBinaryEncoders: what the gateway and the fanout write in the binary
// format decodes to what their JSON decodes to.
func TestBinaryEncoders(t *testing.T) {
	online := true
	h := Header{V: 1, Server: "im-1", AppID: 7, TS: 1733000000000, ID: "im-1:9:42"}
	msg := Message{Cmd: CmdIM, Version: 2, Sender: 1, Receiver: 9223372036854775807, Timestamp: 1733000000, MsgID: 5,
		Content: "héllo \"x\"\n\u2028", Raw: []byte{0, 1, 2, 255}}
	src := &Source{Topic: "imr.publish.bulk", Partition: 11, Offset: 1 << 36, Index: 3, Inc: "f1733000000000"}
	hp := h
	hp.Type = TypePush
	push := &Publish{Header: hp, Receivers: []int64{1, 1234567890123456789, 5}, Msg: msg, IMRTimestamp: 99}
	hp.Type = TypePublish
	pub := &Publish{Header: hp, Receiver: 5, MsgID: 6, DeviceID: 7, Msg: msg, Src: src}
	hj := h
	hj.Type = TypePushJob
	gmsg := msg
	gmsg.Cmd, gmsg.Raw = CmdGroupIM, nil
	job := &PushJob{Header: hj, Receivers: []int64{3, 4}, Msg: gmsg, Src: src}
	ranged := &PushJob{Header: hj, Msg: gmsg, Src: src, MemberRange: []int64{0, 2000}}
	hs := h
	hs.Type = TypeSubscribe
	sub := &Presence{Header: hs, Epoch: 3, UID: 8, Online: &online}

	cases := []struct {
		name      string
		json, bin []byte
	}{
		{"push", push.AppendJSON(nil), push.AppendBinary(nil)},
		{"publish", pub.AppendJSON(nil), pub.AppendBinary(nil)},
		{"push_job", job.AppendJSON(nil), job.AppendBinary(nil)},
		{"push_job with member_range", ranged.AppendJSON(nil), ranged.AppendBinary(nil)},
		{"subscribe", mustJSON(t, sub), sub.AppendBinary(nil)},
		{"push_jobs", AppendPushJobs(nil, hj, [][]byte{job.AppendJSON(nil), ranged.AppendJSON(nil)}),
			AppendPushJobsBinary(nil, hj, [][]byte{job.AppendBinary(nil), ranged.AppendBinary(nil)})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := Decode(c.json, 0)
			if err != nil {
				t.Fatalf("JSON: %v\n%s", err, c.json)
			}
			got, err := DecodeKindFormat(c.bin, 0, want.Head().Type.Kind(), FormatBinary)
			if err != nil {
				t.Fatalf("binary: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("binary decodes to %+v, JSON to %+v", got, want)
			}
			var w wire
			if err := json.Unmarshal(c.json, &w); err != nil {
				t.Fatal(err)
			}
			if ref := binaryOf(t, &w); string(ref) != string(c.bin) {
				t.Errorf("typed encoder wrote\n%x\nall-fields encoder\n%x", c.bin, ref)
			}
			if len(c.bin) >= len(c.json) {
				t.Errorf("binary %d bytes, JSON %d", len(c.bin), len(c.json))
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBinaryNested: a nested message's length prefix is re-sized when the
// body needs fewer or more than the 3 bytes reserved for it.
func TestBinaryNested(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2<<20 - 1, 2 << 20, 3 << 20} {
		m := Message{Cmd: CmdIM, Content: strings.Repeat("x", n)}
		b := appendNested([]byte{0xAA}, fMsg, m.appendBinary)
		num, typ, k := protowire.ConsumeTag(b[1:])
		body, l := protowire.ConsumeBytes(b[1+k:])
		if num != fMsg || typ != protowire.BytesType || l < 0 || 1+k+l != len(b) {
			t.Fatalf("content %d: tag %d/%d, length %d of %d", n, num, typ, l, len(b))
		}
		var got Message
		if err := got.decodeBinary(body); err != nil || got.Content != m.Content || got.Cmd != CmdIM {
			t.Fatalf("content %d: %v", n, err)
		}
	}
}

// TestBinaryErrors: what is not a binary event is rejected with a reason,
// never a panic; fields a newer writer adds are skipped.
func TestBinaryErrors(t *testing.T) {
	hp := Header{V: 1, Type: TypePush, Server: "im-1", AppID: 7}
	good := (&Publish{Header: hp, Receivers: []int64{5}, Msg: Message{Cmd: CmdIM, Sender: 1, Receiver: 5}}).AppendBinary(nil)
	unknown := protowire.AppendString(protowire.AppendTag(append([]byte{}, good...), 99, protowire.BytesType), "later")
	if _, err := DecodeBinary(unknown, 0); err != nil {
		t.Fatalf("an unknown field: %v", err)
	}
	wrongType := protowire.AppendString(protowire.AppendTag(append([]byte{}, good...), fAppID, protowire.BytesType), "7")
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"truncated":          {good[:len(good)-1], "binary format"},
		"JSON":               {[]byte(`{"v":1}`), "binary format"},
		"wrong wire type":    {wrongType, "record.appid: binary format: want a varint"},
		"empty":              {nil, "record.v: required"},
		"oversize":           {make([]byte, DefaultMaxBytes+1), "exceeds the limit"},
		"huge length prefix": {protowire.AppendVarint(protowire.AppendTag(nil, fMsg, protowire.BytesType), 1<<40), "binary format"},
	} {
		_, err := DecodeBinary(c.in, 0)
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an *Error containing %q", name, err, c.want)
		}
	}
	if _, err := DecodeKindFormat(good, 0, KindPublish, "avro"); err == nil || !strings.Contains(err.Error(), `unknown record format "avro"`) {
		t.Errorf("unknown format: %v", err)
	}
}

func FuzzDecodeBinary(f *testing.F) {
	hp := Header{V: 1, Type: TypePushJob, Server: "im-1", AppID: 7}
	job := (&PushJob{Header: hp, Receivers: []int64{5, 6}, Msg: Message{Cmd: CmdGroupIM, Sender: 1, Receiver: 5, Content: "x"},
		Src: &Source{Topic: "t", Offset: 3}}).AppendBinary(nil)
	f.Add(job)
	f.Add(AppendPushJobsBinary(nil, hp, [][]byte{job, job}))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeBinary(data, 0)
		if err == nil && ev == nil {
			t.Fatal("no event and no error")
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
	})
}

// TestBinaryRoundTrip: random jobs and events, every field set or zero
// (negative and 19-digit numbers, hostile strings), read back field for
// field by the binary reader before validation.
func TestBinaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	str := func() string {
		alphabet := []string{"a", "\x00", "\xff", "你", "😀", `"`, "\n"}
		s := ""
		for n := r.IntN(5); n > 0; n-- {
			s += alphabet[r.IntN(len(alphabet))]
		}
		return s
	}
	num := func() int64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return r.Int64N(300) - 150
		}
		return r.Int64() - r.Int64()
	}
	ints := func() []int64 {
		var vs []int64
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []int64{}
		}
		for n := r.IntN(5) + 1; n > 0; n-- {
			vs = append(vs, num())
		}
		return vs
	}
	for range 5000 {
		h := Header{V: int(num()), Type: Type(str()), Server: str(), AppID: num(), TS: num(), ID: str()}
		m := Message{Cmd: int(num()), Flag: int(num()), Version: int(num()), Seq: num(), Sender: num(), Receiver: num(),
			Timestamp: num(), MsgID: num(), Content: str(), Notification: str(), CustomerAppID: num(), CustomerID: num(),
			StoreID: num(), SellerID: num(), SyncKey: num(), GroupID: num(), SenderAppID: num(), ReceiverAppID: num()}
		if s := str(); s != "" {
			m.Raw = []byte(s)
		}
		var src *Source
		if r.IntN(2) == 0 {
			src = &Source{Topic: str(), Partition: int(num()), Offset: num(), Index: int(num()), Inc: str()}
		}
		j := PushJob{Header: h, Receivers: ints(), Msg: m, Src: src, MemberRange: ints()}
		var w wire
		var got Message
		hasMsg, err := w.decodeBinary(j.AppendBinary(nil), &got)
		if err != nil || !hasMsg {
			t.Fatalf("%+v: %v", j, err)
		}
		back := PushJob{Header: w.Header, Receivers: w.Receivers, Msg: got, Src: w.Src, MemberRange: w.MemberRange}
		if !reflect.DeepEqual(back, j) {
			t.Fatalf("wrote %+v\nread  %+v", j, back)
		}
		p := Publish{Header: h, Receiver: num(), MsgID: num(), DeviceID: num(), Receivers: ints(), Msg: m, Src: src, IMRTimestamp: num()}
		if len(p.Receivers) == 0 {
			p.Receivers = nil // the encoder writes receivers only when there are some, as AppendJSON
		}
		w, got = wire{}, Message{}
		if _, err := w.decodeBinary(p.AppendBinary(nil), &got); err != nil {
			t.Fatal(err)
		}
		pb := Publish{Header: w.Header, Receiver: w.Receiver, MsgID: w.MsgID, DeviceID: w.DeviceID, Receivers: w.Receivers,
			Msg: got, Src: w.Src, IMRTimestamp: w.IMRTS}
		if !reflect.DeepEqual(pb, p) {
			t.Fatalf("wrote %+v\nread  %+v", p, pb)
		}
	}
}
