package schemas_test

import (
	"encoding/json"
	"testing"

	"github.com/imstream/imstream/schemas"
)

var publishRecord = []byte(`{"v":1,"type":"publish","server":"im-1","appid":7,"ts":1700000000000,"id":"im-1:1:42","receiver":1001,"msgid":5,"device_id":6,"msg":{"cmd":4,"flag":1,"sender":1000,"receiver":1001,"timestamp":1700000000,"content":"{\"text\":\"hello there\"}"}}`)

func BenchmarkDecodePublish(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(publishRecord)))
	for i := 0; i < b.N; i++ {
		if _, err := schemas.Decode(publishRecord, 0); err != nil {
			b.Fatal(err)
		}
	}
}

var pushJob = &schemas.PushJob{
	Header:    schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: 7, TS: 1700000000000, ID: "im-1:1:42"},
	Receivers: []int64{1001},
	Msg:       schemas.Message{Cmd: 4, Flag: 1, Sender: 1000, Receiver: 1001, Timestamp: 1700000000, Content: `{"text":"hello there"}`},
	Src:       &schemas.Source{Topic: "imr.publish", Partition: 3, Offset: 123456},
}

func BenchmarkDecodePushJob(b *testing.B) {
	rec := pushJob.AppendJSON(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for i := 0; i < b.N; i++ {
		if _, err := schemas.Decode(rec, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodePushJob: the fanout's encoder against json.Marshal of the
// same job (the two give the same bytes).
func BenchmarkEncodePushJob(b *testing.B) {
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for i := 0; i < b.N; i++ {
			buf = pushJob.AppendJSON(buf[:0])
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := json.Marshal(pushJob); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFormats: decoding and encoding a push job in each format.
func BenchmarkFormats(b *testing.B) {
	for _, f := range []struct {
		name   string
		rec    []byte
		decode func([]byte, int) (schemas.Event, error)
		encode func([]byte) []byte
	}{
		{"json", pushJob.AppendJSON(nil), schemas.Decode, pushJob.AppendJSON},
		{"binary", pushJob.AppendBinary(nil), schemas.DecodeBinary, pushJob.AppendBinary},
	} {
		b.Run("decode/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.rec)))
			for b.Loop() {
				if _, err := f.decode(f.rec, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encode/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 512)
			for b.Loop() {
				buf = f.encode(buf[:0])
			}
		})
	}
}
