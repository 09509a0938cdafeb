package pusher_test

import (
	"testing"

	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
)

func BenchmarkEncodePeerEntry(b *testing.B) {
	enc := &pusher.Encoder{SystemPush: true}
	job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: []int64{1001},
		Msg: schemas.Message{Cmd: 4, Sender: 1000, Receiver: 1001, Content: `{"text":"hello <there> & welcome"}`}}
	buf := make([]pusher.Entry, 0, 1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = enc.Append(buf[:0], job, "imr.push", "", 3, int64(i))
	}
}

func BenchmarkEncodeGroupEntry1000(b *testing.B) {
	enc := &pusher.Encoder{}
	rs := make([]int64, 1000)
	for i := range rs {
		rs[i] = int64(100000 + i)
	}
	job := &schemas.PushJob{Header: schemas.Header{AppID: 7}, Receivers: rs, Msg: schemas.Message{Cmd: 8, Sender: 1, Receiver: 55, Content: "hi"}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		enc.Append(nil, job, "imr.push", "", 3, int64(i))
	}
}
