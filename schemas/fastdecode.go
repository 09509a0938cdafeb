package schemas

import (
	"encoding/base64"
	"encoding/json"
	"hash/maphash"
	"strings"
	"sync/atomic"
	"unicode/utf16"
	"unicode/utf8"
)

// The fast path of Decode: a single pass over the plain JSON that producers
// write, without reflection. It fills a wire exactly as encoding/json would,
// and it gives up (returns false) on everything it does not handle the same
// way: duplicate keys, keys that differ from a field name only in case or
// that hold escapes or non-ASCII bytes, null, numbers that are not plain
// integers or overflow, values of the wrong type, invalid UTF-8, invalid
// JSON, deep nesting, trailing data. Decode then runs encoding/json, whose
// result and error messages stay authoritative. FuzzFastDecode checks that
// whenever the fast path answers, encoding/json accepts the record and
// builds the same wire.

const maxSkipDepth = 32

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	i := s.i
	for i < len(s.b) && s.b[i] <= ' ' {
		switch s.b[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		break
	}
	s.i = i
}

// next skips white space and reports whether the next byte is c, consuming it.
func (s *scanner) next(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key reads an object key and the colon after it. ok is false for keys with
// escapes or non-ASCII bytes.
func (s *scanner) key() (k []byte, ok bool) {
	if !s.next('"') {
		return nil, false
	}
	b, start := s.b, s.i
	for i := start; i < len(b); i++ {
		switch strClass[b[i]] {
		case plain:
			continue
		case quote:
			s.i = i + 1
			return b[start:i], s.next(':')
		}
		return nil, false
	}
	return nil, false
}

// Byte classes inside a JSON string.
const (
	plain     = iota // printable ASCII other than " and \
	quote            // "
	backslash        // \
	control          // < 0x20: invalid unescaped
	nonASCII         // >= 0x80: part of a UTF-8 sequence
)

var strClass = func() (t [256]byte) {
	for c := range t {
		switch {
		case c == '"':
			t[c] = quote
		case c == '\\':
			t[c] = backslash
		case c < 0x20:
			t[c] = control
		case c >= utf8.RuneSelf:
			t[c] = nonASCII
		}
	}
	return t
}()

// object calls field for every key of an object; field reads the value.
// It reports false when the object is malformed or field gave up.
func (s *scanner) object(field func(k []byte) bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	for {
		k, ok := s.key()
		if !ok || !field(k) {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next('}')
	}
}

// int reads a JSON integer that fits an int64.
func (s *scanner) int() (int64, bool) {
	s.ws()
	b, i := s.b, s.i
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var u uint64
	for ; i < len(b); i++ {
		c := b[i] - '0'
		if c > 9 {
			break
		}
		if u > (1<<63)/10 {
			return 0, false
		}
		u = u*10 + uint64(c)
	}
	s.i = i
	n := i - start
	switch {
	case n == 0, n > 1 && b[start] == '0': // no digits, or a leading zero
		return 0, false
	case i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E'):
		return 0, false // a fraction or exponent: encoding/json rejects it for an integer
	case neg && u > 1<<63, !neg && u > 1<<63-1:
		return 0, false
	case neg:
		return -int64(u), true
	}
	return int64(u), true
}

// str reads a JSON string; invalid UTF-8 gives up (encoding/json would
// replace it).
func (s *scanner) str() (string, bool) {
	if !s.next('"') {
		return "", false
	}
	b, start := s.b, s.i
	ascii := true
	for i := start; i < len(b); i++ {
		switch strClass[b[i]] {
		case plain:
		case quote:
			raw := b[start:i]
			s.i = i + 1
			if !ascii && !utf8.Valid(raw) {
				return "", false
			}
			return string(raw), true
		case backslash:
			s.i = i
			return s.escaped(start)
		case control:
			return "", false
		case nonASCII:
			ascii = false
		}
	}
	return "", false
}

// skipStr reads a string it does not keep: one without escapes or control
// characters is only checked, not copied; any other is read by str, whose
// answer (including giving up) stands.
func (s *scanner) skipStr() bool {
	b, start := s.b, s.i+1
	ascii := true
	for i := start; i < len(b); i++ {
		switch strClass[b[i]] {
		case plain:
		case quote:
			if !ascii && !utf8.Valid(b[start:i]) {
				return false
			}
			s.i = i + 1
			return true
		case nonASCII:
			ascii = false
		default:
			_, ok := s.str()
			return ok
		}
	}
	return false
}

// name reads a string of a field with few distinct values (type, server,
// a source topic or incarnation): an unescaped one is looked up in names
// first, so that decoding a stream of events does not allocate the same
// few strings again for each.
func (s *scanner) name() (string, bool) {
	if s.i < len(s.b) && s.b[s.i] == '"' {
		b := s.b[s.i+1:]
		for i, c := range b {
			if strClass[c] != plain {
				if c != '"' {
					break
				}
				s.i += i + 2
				return names.get(b[:i]), true
			}
		}
	}
	return s.str()
}

var nameSeed = maphash.MakeSeed()

// names caches strings of low-cardinality fields: a direct-mapped table of
// immutable strings, safe for concurrent decoders without locks (a slot is
// replaced whole; a miss only allocates, as str would).
var names nameCache

type nameCache [1024]atomic.Pointer[string]

func (c *nameCache) get(b []byte) string {
	if len(b) > 64 {
		return string(b)
	}
	slot := &c[maphash.Bytes(nameSeed, b)%uint64(len(c))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	v := string(b)
	slot.Store(&v)
	return v
}

// escaped finishes a string whose content starts at start and whose first
// escape is at s.i. It gives up where encoding/json would substitute U+FFFD
// (a lone surrogate, invalid UTF-8).
func (s *scanner) escaped(start int) (string, bool) {
	b, i := s.b, s.i
	var sb strings.Builder // its String does not copy
	sb.Grow(i - start + 64)
	sb.Write(b[start:i])
	for i < len(b) {
		run := i
		for i < len(b) && (strClass[b[i]] == plain || strClass[b[i]] == nonASCII) {
			i++
		}
		sb.Write(b[run:i])
		if i >= len(b) {
			break
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			str := sb.String()
			return str, utf8.ValidString(str)
		case '\\':
		default: // a control character
			return "", false
		}
		if i+1 >= len(b) {
			return "", false
		}
		e := b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			sb.WriteByte(e)
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			s.i = i
			r, ok := s.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				if !s.lit(`\u`) {
					return "", false
				}
				lo, ok := s.hex4()
				if r = utf16.DecodeRune(r, lo); !ok || r == utf8.RuneError {
					return "", false
				}
			}
			i = s.i
			sb.WriteRune(r)
		default:
			return "", false
		}
	}
	return "", false
}

// hex4 reads the four hex digits of a \u escape.
func (s *scanner) hex4() (rune, bool) {
	if len(s.b)-s.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.i += 4
	return r, true
}

func (s *scanner) bool() (bool, bool) {
	s.ws()
	if s.lit("true") {
		return true, true
	}
	if s.lit("false") {
		return false, true
	}
	return false, false
}

func (s *scanner) lit(l string) bool {
	if len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return true
	}
	return false
}

// raws reads an array of JSON values, each kept as the raw bytes of its
// value (in data, not copied), as []json.RawMessage holds them.
func (s *scanner) raws() ([]json.RawMessage, bool) {
	if !s.next('[') {
		return nil, false
	}
	out := make([]json.RawMessage, 0, 16)
	if s.next(']') {
		return out, true
	}
	for {
		s.ws()
		start := s.i
		if !s.skip(1) {
			return nil, false
		}
		out = append(out, s.b[start:s.i:s.i])
		if s.next(',') {
			continue
		}
		return out, s.next(']')
	}
}

// ints reads an array of integers; [] gives an empty, non-nil slice as
// encoding/json does.
func (s *scanner) ints() ([]int64, bool) {
	if !s.next('[') {
		return nil, false
	}
	out := make([]int64, 0, 4)
	if s.next(']') {
		return out, true
	}
	for {
		v, ok := s.int()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		if s.next(',') {
			continue
		}
		return out, s.next(']')
	}
}

// skip reads and discards any valid JSON value (an unknown field's).
func (s *scanner) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.skipStr()
	case c == '{':
		return s.object(func([]byte) bool { return s.skip(depth + 1) })
	case c == '[':
		s.i++
		if s.next(']') {
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			if s.next(',') {
				continue
			}
			return s.next(']')
		}
	case c == 't', c == 'f':
		_, ok := s.bool()
		return ok
	case c == 'n':
		return s.lit("null")
	default:
		return s.number()
	}
}

// number reads any JSON number (of an unknown field).
func (s *scanner) number() bool {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	start := s.i
	n := digits()
	if n == 0 || n > 1 && s.b[start] == '0' {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// unknown skips the value of a key no field has, unless encoding/json would
// match the key to a field case-insensitively.
func (s *scanner) unknown(k []byte, names []string) bool {
	for _, n := range names {
		if asciiEqualFold(k, n) {
			return false
		}
	}
	return s.skip(1)
}

func asciiEqualFold(k []byte, n string) bool {
	if len(k) != len(n) {
		return false
	}
	for i := range k {
		a, b := k[i], n[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// seen flags a key, reporting false when it was seen before.
func seen(mask *uint64, bit uint) bool {
	if *mask&(1<<bit) != 0 {
		return false
	}
	*mask |= 1 << bit
	return true
}

// The objects the fast path decodes, each as its keys in a fixed order and
// a pointer per key to the field it fills (fields below): a key's index is
// also its bit in the seen mask. fastdecode_test checks each list against
// the struct's json tags.
var (
	wireKeys = newKeys("v", "type", "server", "appid", "ts", "id", "epoch", "uid", "online", "room_id", "receiver",
		"msgid", "device_id", "receivers", "msg", "src", "imr_timestamp", "group_id", "super", "members", "mute", "jobs", "member_range",
		"online_only", "exclude_origin", "route")
	messageKeys = newKeys("cmd", "flag", "version", "seq", "sender", "receiver", "timestamp", "msgid", "content",
		"notification", "customer_appid", "customer_id", "store_id", "seller_id", "sync_key", "group_id",
		"sender_appid", "receiver_appid", "raw")
	sourceKeys = newKeys("topic", "partition", "offset", "index", "inc")
)

// keys finds a key's index among an object's names in one or two
// comparisons: an open-addressed table hashed on the key's length and its
// first and last bytes.
type keys struct {
	names []string
	slots [128]uint8 // 1 + the index of the name hashed there; 0 is empty
}

func newKeys(names ...string) *keys {
	if len(names) > 64 {
		panic("schemas: more keys than the seen mask holds")
	}
	t := &keys{names: names}
	for i, n := range names {
		h := keyHash([]byte(n))
		for t.slots[h] != 0 {
			h = (h + 1) % uint(len(t.slots))
		}
		t.slots[h] = uint8(i + 1)
	}
	return t
}

func keyHash(k []byte) uint {
	return (uint(len(k))*131 + uint(k[0])*31 + uint(k[len(k)-1])) % 128
}

// index is k's index among the names, or -1.
func (t *keys) index(k []byte) int {
	if len(k) == 0 {
		return -1
	}
	for h := keyHash(k); t.slots[h] != 0; h = (h + 1) % uint(len(t.slots)) {
		if i := int(t.slots[h]) - 1; string(k) == t.names[i] {
			return i
		}
	}
	return -1
}

// wireMsg is the bit of "msg" in a wire's seen mask.
var wireMsg = uint(wireKeys.index([]byte("msg")))

// name is a string field read through the cache of low-cardinality
// strings (server ids, topic names) rather than copied each time.
type name string

// decodeFast fills w from data except w.Msg: a msg object is decoded into
// *msg and reported by hasMsg (set only when ok), so that the caller can
// keep msg on its stack. ok false means "use encoding/json" (w is then in
// an unspecified state).
func (w *wire) decodeFast(data []byte, msg *Message) (ok, hasMsg bool) {
	s := &scanner{b: data}
	mask, ok := s.fields(wireKeys, &w.V, &w.Type, (*name)(&w.Server), &w.AppID, &w.TS, &w.ID, &w.Epoch,
		&w.UID, &w.Online, &w.RoomID, &w.Receiver, &w.MsgID, &w.DeviceID, &w.Receivers, msg, &w.Src, &w.IMRTS,
		&w.GroupID, &w.Super, &w.Members, &w.Mute, &w.Jobs, &w.MemberRange, &w.OnlineOnly, &w.ExclOrigin, (*name)(&w.Route))
	s.ws()
	ok = ok && s.i == len(s.b)
	return ok, ok && mask&(1<<wireMsg) != 0
}

func (m *Message) decodeFast(s *scanner) bool {
	_, ok := s.fields(messageKeys, &m.Cmd, &m.Flag, &m.Version, &m.Seq, &m.Sender, &m.Receiver,
		&m.Timestamp, &m.MsgID, &m.Content, &m.Notification, &m.CustomerAppID, &m.CustomerID, &m.StoreID,
		&m.SellerID, &m.SyncKey, &m.GroupID, &m.SenderAppID, &m.ReceiverAppID, &m.Raw)
	return ok
}

func (src *Source) decodeFast(s *scanner) bool {
	_, ok := s.fields(sourceKeys, (*name)(&src.Topic), &src.Partition, &src.Offset, &src.Index, (*name)(&src.Inc))
	return ok
}

// fields reads an object whose key names[i] fills ptrs[i] (len(ptrs) ==
// len(keys.names)), and returns the mask of the keys it saw. A key
// seen twice, a key that differs from a name only in case, or a value
// that does not fit its field's type gives up.
func (s *scanner) fields(keys *keys, ptrs ...any) (uint64, bool) {
	var mask uint64
	ok := s.object(func(k []byte) bool {
		if i := keys.index(k); i >= 0 {
			return seen(&mask, uint(i)) && s.value(ptrs[i])
		}
		return s.unknown(k, keys.names)
	})
	return mask, ok
}

// value reads a JSON value into the field p points to, as encoding/json
// would for the field's type (a pointer field gets a new value).
func (s *scanner) value(p any) bool {
	var ok bool
	switch p := p.(type) {
	case *int64:
		*p, ok = s.int()
	case *int:
		var v int64
		v, ok = s.int()
		*p = int(v)
	case *string:
		*p, ok = s.str()
	case *name:
		var v string
		v, ok = s.name()
		*p = name(v)
	case *Type:
		var v string
		v, ok = s.name()
		*p = Type(v)
	case *bool:
		*p, ok = s.bool()
	case **bool:
		var b bool
		b, ok = s.bool()
		*p = &b
	case *[]int64:
		*p, ok = s.ints()
	case *[]json.RawMessage:
		*p, ok = s.raws()
	case *[]byte:
		var str string
		if str, ok = s.str(); ok {
			// encoding/json's []byte decoding, exactly.
			b := make([]byte, base64.StdEncoding.DecodedLen(len(str)))
			n, err := base64.StdEncoding.Decode(b, []byte(str))
			*p, ok = b[:n], err == nil
		}
	case *Message:
		*p = Message{}
		ok = p.decodeFast(s)
	case **Source:
		*p = &Source{}
		ok = (*p).decodeFast(s)
	}
	return ok
}
