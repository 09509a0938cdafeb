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

var wireNames = []string{"v", "type", "server", "appid", "ts", "id", "epoch", "uid", "online", "room_id", "receiver",
	"msgid", "device_id", "receivers", "msg", "src", "imr_timestamp", "group_id", "super", "members", "mute", "jobs"}

// decodeFast fills w from data except w.Msg: a msg object is decoded into
// *msg and reported by hasMsg (set only when ok), so that the caller can
// keep msg on its stack. ok false means "use encoding/json" (w is then in
// an unspecified state).
func (w *wire) decodeFast(data []byte, msg *Message) (ok, hasMsg bool) {
	s := &scanner{b: data}
	var mask uint64
	i64 := func(dst *int64) bool {
		v, ok := s.int()
		*dst = v
		return ok
	}
	ok = s.object(func(k []byte) bool {
		var v int64
		switch string(k) {
		case "v":
			ok := seen(&mask, 0) && i64(&v)
			w.V = int(v)
			return ok
		case "type":
			str, ok := s.name()
			w.Type = Type(str)
			return seen(&mask, 1) && ok
		case "server":
			str, ok := s.name()
			w.Server = str
			return seen(&mask, 2) && ok
		case "id":
			str, ok := s.str()
			w.ID = str
			return seen(&mask, 5) && ok
		case "online":
			b, ok := s.bool()
			w.Online = &b
			return seen(&mask, 8) && ok
		case "receivers":
			rs, ok := s.ints()
			w.Receivers = rs
			return seen(&mask, 13) && ok
		case "msg":
			*msg = Message{}
			hasMsg = true
			return seen(&mask, 14) && msg.decodeFast(s)
		case "src":
			w.Src = &Source{}
			return seen(&mask, 15) && w.Src.decodeFast(s)
		case "super":
			b, ok := s.bool()
			w.Super = b
			return seen(&mask, 18) && ok
		case "members":
			ms, ok := s.ints()
			w.Members = ms
			return seen(&mask, 19) && ok
		case "mute":
			b, ok := s.bool()
			w.Mute = b
			return seen(&mask, 20) && ok
		case "jobs":
			js, ok := s.raws()
			w.Jobs = js
			return seen(&mask, 21) && ok
		}
		if p, bit := w.intField(k); p != nil {
			return seen(&mask, bit) && i64(p)
		}
		return s.unknown(k, wireNames)
	})
	s.ws()
	ok = ok && s.i == len(s.b)
	return ok, ok && hasMsg
}

// intField is the integer field named k and its bit in the seen mask, or nil.
func (w *wire) intField(k []byte) (*int64, uint) {
	switch string(k) {
	case "appid":
		return &w.AppID, 3
	case "ts":
		return &w.TS, 4
	case "epoch":
		return &w.Epoch, 6
	case "uid":
		return &w.UID, 7
	case "room_id":
		return &w.RoomID, 9
	case "receiver":
		return &w.Receiver, 10
	case "msgid":
		return &w.MsgID, 11
	case "device_id":
		return &w.DeviceID, 12
	case "imr_timestamp":
		return &w.IMRTS, 16
	case "group_id":
		return &w.GroupID, 17
	}
	return nil, 0
}

var messageNames = []string{"cmd", "flag", "version", "seq", "sender", "receiver", "timestamp", "msgid", "content",
	"notification", "customer_appid", "customer_id", "store_id", "seller_id", "sync_key", "group_id",
	"sender_appid", "receiver_appid", "raw"}

func (m *Message) decodeFast(s *scanner) bool {
	var mask uint64
	i64 := func(bit uint, dst *int64) bool {
		v, ok := s.int()
		*dst = v
		return seen(&mask, bit) && ok
	}
	integer := func(bit uint, dst *int) bool {
		v, ok := s.int()
		*dst = int(v)
		return seen(&mask, bit) && ok
	}
	return s.object(func(k []byte) bool {
		switch string(k) {
		case "cmd":
			return integer(0, &m.Cmd)
		case "flag":
			return integer(1, &m.Flag)
		case "version":
			return integer(2, &m.Version)
		case "seq":
			return i64(3, &m.Seq)
		case "sender":
			return i64(4, &m.Sender)
		case "receiver":
			return i64(5, &m.Receiver)
		case "timestamp":
			return i64(6, &m.Timestamp)
		case "msgid":
			return i64(7, &m.MsgID)
		case "content":
			str, ok := s.str()
			m.Content = str
			return seen(&mask, 8) && ok
		case "notification":
			str, ok := s.str()
			m.Notification = str
			return seen(&mask, 9) && ok
		case "customer_appid":
			return i64(10, &m.CustomerAppID)
		case "customer_id":
			return i64(11, &m.CustomerID)
		case "store_id":
			return i64(12, &m.StoreID)
		case "seller_id":
			return i64(13, &m.SellerID)
		case "sync_key":
			return i64(14, &m.SyncKey)
		case "group_id":
			return i64(15, &m.GroupID)
		case "sender_appid":
			return i64(16, &m.SenderAppID)
		case "receiver_appid":
			return i64(17, &m.ReceiverAppID)
		case "raw":
			str, ok := s.str()
			if !seen(&mask, 18) || !ok {
				return false
			}
			// encoding/json's []byte decoding, exactly.
			b := make([]byte, base64.StdEncoding.DecodedLen(len(str)))
			n, err := base64.StdEncoding.Decode(b, []byte(str))
			m.Raw = b[:n]
			return err == nil
		}
		return s.unknown(k, messageNames)
	})
}

var sourceNames = []string{"topic", "partition", "offset", "index", "inc"}

func (src *Source) decodeFast(s *scanner) bool {
	var mask uint64
	return s.object(func(k []byte) bool {
		var v int64
		var ok bool
		switch string(k) {
		case "topic":
			src.Topic, ok = s.name()
			return seen(&mask, 0) && ok
		case "partition":
			v, ok = s.int()
			src.Partition = int(v)
			return seen(&mask, 1) && ok
		case "offset":
			v, ok = s.int()
			src.Offset = v
			return seen(&mask, 2) && ok
		case "index":
			v, ok = s.int()
			src.Index = int(v)
			return seen(&mask, 3) && ok
		case "inc":
			src.Inc, ok = s.name()
			return seen(&mask, 4) && ok
		}
		return s.unknown(k, sourceNames)
	})
}
