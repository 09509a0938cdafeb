package dlq

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/fanout"
)

func letter(code, topic string, at time.Time, own ...kafka.Header) kafka.Message {
	hs := []kafka.Header{{Key: "reason", Value: []byte(code + ": detail")}, {Key: "stage", Value: []byte("fanout")},
		{Key: "src_topic", Value: []byte(topic)}, {Key: "src_partition", Value: []byte("3")}, {Key: "src_offset", Value: []byte("42")}}
	return kafka.Message{Topic: "imr.dlq", Partition: 1, Offset: 7, Time: at, Key: []byte("7:1"),
		Value:   []byte(`{"v":1,"type":"publish","server":"s1","appid":7,"receiver":1,"msg":{"cmd":4,"sender":2,"receiver":1}}`),
		Headers: append(hs, own...)}
}

// TestLetters: a dead letter's headers are read back (reason code, stage,
// source coordinates, the record's own headers apart), its appid from its
// body; filters select by code, source topic, app and time; the summary
// groups by code and topic, most first.
func TestLetters(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	fmtH := kafka.Header{Key: "format", Value: []byte("x")}
	l := letterOf(letter("key_mismatch", "imr.publish", t0, fmtH))
	if l.Code != "key_mismatch" || l.Stage != "fanout" || l.SrcTopic != "imr.publish" || l.SrcPartition != 3 || l.SrcOffset != 42 {
		t.Fatalf("letter %+v", l)
	}
	if own := l.Own(); len(own) != 1 || own[0].Key != "format" {
		t.Fatalf("own headers %v", own)
	}
	if l.Coordinates("imr.dlq") != "imr.dlq/1/7" {
		t.Fatalf("coordinates %s", l.Coordinates("imr.dlq"))
	}
	ok := letterOf(letter("oversize", "imr.push", t0.Add(time.Minute)))
	if ok.AppID != 7 {
		t.Fatalf("appid %d, want 7 (from the body)", ok.AppID)
	}
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true}, {Filter{Reason: "oversize"}, true}, {Filter{Reason: "key_mismatch"}, false},
		{Filter{Topic: "imr.push"}, true}, {Filter{Topic: "imr.publish"}, false},
		{Filter{AppID: 7}, true}, {Filter{AppID: 8}, false},
		{Filter{Until: t0.Add(2 * time.Minute)}, true}, {Filter{Until: t0}, false},
	} {
		if got := tc.f.match(ok); got != tc.want {
			t.Errorf("%+v matches: %v, want %v", tc.f, got, tc.want)
		}
	}
	sum := Summarize([]Letter{l, ok, letterOf(letter("oversize", "imr.push", t0.Add(2*time.Minute)))})
	if len(sum) != 2 || sum[0].Code != "oversize" || sum[0].Count != 2 || !sum[0].First.Equal(t0.Add(time.Minute)) || !sum[0].Last.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("summary %+v", sum)
	}
}

// TestPushBalancer: re-driven push jobs go where the fanout put them
// (source partition mod partitions); other records where murmur2 does.
func TestPushBalancer(t *testing.T) {
	b := &fanout.OutputBalancer{PushTopic: "imr.push"}
	if p := b.Balance(kafka.Message{Topic: "imr.push", Key: []byte("imr.publish:7")}, 0, 1, 2, 3); p != 3 {
		t.Fatalf("push job of source partition 7 on 4 partitions: %d, want 3", p)
	}
	m := kafka.Message{Topic: "imr.publish", Key: []byte("7:1")}
	if a, b2 := b.Balance(m, 0, 1, 2, 3), b.Balance(m, 0, 1, 2, 3); a != b2 {
		t.Fatalf("not deterministic: %d, %d", a, b2)
	}
}
