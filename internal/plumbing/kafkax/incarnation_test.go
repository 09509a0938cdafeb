package kafkax

import (
	"hash/fnv"
	"strconv"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestFingerprint(t *testing.T) {
	a := &kafka.Message{Key: []byte("7:101"), Value: []byte(`{"v":1,"type":"publish"}`)}
	same := &kafka.Message{Key: []byte("7:101"), Value: []byte(`{"v":1,"type":"publish"}`), Offset: 9}
	if Fingerprint(a) != Fingerprint(same) || !holdsFingerprint(same, Fingerprint(a)) {
		t.Fatalf("one content, two fingerprints: %s %s", Fingerprint(a), Fingerprint(same))
	}
	for _, other := range []*kafka.Message{
		{Key: []byte("7:102"), Value: a.Value},
		{Key: a.Key, Value: []byte(`{"v":1,"type":"publisH"}`)},
		{Key: []byte("7:10"), Value: []byte(`1{"v":1,"type":"publish"}`)}, // the key/value boundary moved
		{Key: a.Key, Value: append(append([]byte{}, a.Value...), ' ')},
	} {
		if holdsFingerprint(other, Fingerprint(a)) {
			t.Errorf("%q/%q taken for %q/%q", other.Key, other.Value, a.Key, a.Value)
		}
	}

	// Commit metadata written before CRC-32C holds FNV-1a fingerprints: a
	// restart after the upgrade must still find its log the same.
	h := fnv.New64a()
	h.Write(a.Key)
	h.Write([]byte{0})
	h.Write(a.Value)
	legacy := strconv.FormatUint(h.Sum64(), 36)
	if !holdsFingerprint(same, legacy) {
		t.Errorf("legacy fingerprint %s of the same record not recognised", legacy)
	}
	if holdsFingerprint(&kafka.Message{Key: a.Key, Value: []byte("x")}, legacy) {
		t.Errorf("legacy fingerprint %s matched another record", legacy)
	}
}

func BenchmarkFingerprint(b *testing.B) {
	m := &kafka.Message{Key: []byte("7:101"), Value: make([]byte, 256<<10)}
	b.SetBytes(int64(len(m.Value)))
	for b.Loop() {
		Fingerprint(m)
	}
}
