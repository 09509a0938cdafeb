package kafkax

import (
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// A log incarnation is one life of a partition's log. A topic deleted and
// re-created, a broker cluster that lost its data or a move to a new
// cluster all start a partition's log again from offset 0 while the group's
// committed offsets, the sinks' watermarks and the IM servers' repeat
// filters still describe the old one. Comparing offsets across such a
// restart drops new records as repeats, so every position imstream records
// is qualified by the incarnation it belongs to.
//
// The consume loop keeps, in the metadata of every committed offset, the
// incarnation token and a fingerprint of the last record handled. When it
// (re)connects to a partition it checks that record: when the log is now
// shorter than it, or the record at its offset has another fingerprint, the
// log is a new one. The loop then starts a new incarnation: it commits the
// new log's first offset with a new token before reading anything, so a
// crash right after cannot start yet another one, logs a WARN line, calls
// Hooks.LogReset, and reads the new log from its beginning. Batches carry
// the token (Batch.Inc); stages put it into the src of what they derive, and
// the sinks keep their watermarks per incarnation.
//
// Tokens: "" for offsets committed without imstream metadata (deployments
// from before incarnations, or offsets set by an external tool), so the
// watermarks they wrote stay in force; "f<unix ms>" when a group starts on a
// partition without any committed offset; "r<unix ms>" after a detected
// restart.

// metaPrefix starts the metadata imstream writes with each committed offset.
const metaPrefix = "imstream/1"

// commitMeta is the state kept with a committed offset.
type commitMeta struct {
	inc string // incarnation token
	fp  string // fingerprint of the record before the committed offset; "" unknown
}

func (m commitMeta) String() string { return metaPrefix + " " + m.inc + " " + m.fp }

// parseMeta reads commit metadata; ok is false for metadata imstream did
// not write (then the incarnation is the legacy "").
func parseMeta(s string) (commitMeta, bool) {
	f := strings.Split(s, " ")
	if len(f) != 3 || f[0] != metaPrefix {
		return commitMeta{}, false
	}
	return commitMeta{inc: f[1], fp: f[2]}, true
}

// fingerprint identifies a record's content: FNV-1a of its key and value.
// Two logs hold the same record at an offset only if they are the same log.
func fingerprint(m *kafka.Message) string {
	h := fnv.New64a()
	h.Write(m.Key)
	h.Write([]byte{0})
	h.Write(m.Value)
	return strconv.FormatUint(h.Sum64(), 36)
}

// newIncarnation returns a fresh token with the given kind prefix.
func newIncarnation(kind string) string {
	return kind + strconv.FormatInt(time.Now().UnixMilli(), 10)
}
