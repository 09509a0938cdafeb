package schemas_test

import (
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
