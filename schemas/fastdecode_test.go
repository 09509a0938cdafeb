package schemas

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// checkFast is the fast path's contract: when it answers, encoding/json
// accepts the same bytes and builds the same wire.
func checkFast(t *testing.T, data []byte) (fast bool) {
	t.Helper()
	var got wire
	var msg Message
	ok, hasMsg := got.decodeFast(data, &msg)
	if !ok {
		return false
	}
	if hasMsg {
		got.Msg = &msg
	}
	var want wire
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("fast path accepted what encoding/json rejects (%v):\n%q", err, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fast path differs from encoding/json on\n%q\nfast: %+v\njson: %+v", data, got, want)
	}
	return true
}

func TestFastDecodeMatchesEncodingJSON(t *testing.T) {
	const peer = `{"v":1,"type":"publish","server":"im-1","appid":7,"receiver":2,"msgid":9,"msg":{"cmd":4,"sender":1,"receiver":2,"content":"hi"}}`
	cases := []struct {
		name string
		in   string
		fast bool // whether the fast path answers (else encoding/json does)
	}{
		{"peer", peer, true},
		{"white space everywhere", " {\n\t\"v\" : 1 , \"type\":\"push\" ,\"server\":\"a\",\"appid\":1,\"receivers\": [ 1 , 2 ] ,\"msg\":{ } }\r\n", true},
		{"unicode content", `{"v":1,"msg":{"content":"你好，世界"}}`, true},
		{"escaped content", `{"v":1,"msg":{"content":"a\"b\\c\n\u00e9\ud83d\ude00"}}`, true},
		{"raw base64", `{"v":1,"msg":{"raw":"AAECAwQ="}}`, true},
		{"empty raw", `{"v":1,"msg":{"raw":""}}`, true},
		{"empty receivers", `{"v":1,"receivers":[]}`, true},
		{"negative and zero", `{"v":-0,"appid":-9223372036854775808,"ts":9223372036854775807}`, true},
		{"online false", `{"online":false,"super":true,"mute":false}`, true},
		{"src", `{"src":{"topic":"imr.publish","partition":3,"offset":17,"index":2}}`, true},
		{"unknown fields of every shape", `{"v":1,"x":{"a":[1,2.5e-3,{"b":null}],"c":"\u0041"},"y":[true,false,null],"z":-1.5E+10,"w":"s"}`, true},
		{"empty object", `{}`, true},
		{"jobs", `{"v":1,"type":"push_jobs","jobs":[{"v":1,"type":"push_job","receivers":[1]} , {"a":[1,{"b":"c\"d"}]}]}`, true},
		{"empty jobs", `{"jobs":[]}`, true},

		{"duplicate key", `{"v":1,"v":2}`, false},
		{"duplicate msg", `{"msg":{"cmd":4},"msg":{"sender":1}}`, false},
		{"case-variant key", `{"V":1}`, false},
		{"case-variant msg key", `{"msg":{"Cmd":4}}`, false},
		{"escaped key", `{"\u0076":1}`, false},
		{"non-ASCII key", `{"ſerver":"x"}`, false},
		{"null", `{"uid":null}`, false},
		{"null msg", `{"msg":null}`, false},
		{"float for int", `{"uid":1.0}`, false},
		{"exponent for int", `{"uid":1e3}`, false},
		{"overflow", `{"uid":9223372036854775808}`, false},
		{"negative overflow", `{"uid":-9223372036854775809}`, false},
		{"leading zero", `{"uid":01}`, false},
		{"string for int", `{"uid":"1"}`, false},
		{"int for string", `{"server":1}`, false},
		{"int for bool", `{"online":1}`, false},
		{"invalid UTF-8", "{\"server\":\"a\xffb\"}", false},
		{"control character", "{\"server\":\"a\x01b\"}", false},
		{"bad base64", `{"msg":{"raw":"!!"}}`, false},
		{"trailing data", peer + `x`, false},
		{"two objects", peer + peer, false},
		{"top-level array", `[1]`, false},
		{"top-level null", `null`, false},
		{"missing value", `{"v":}`, false},
		{"trailing comma", `{"v":1,}`, false},
		{"unclosed", `{"v":1`, false},
		{"deep nesting", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, false},
		{"bad unknown number", `{"x":1.}`, false},
		{"bad escape", `{"msg":{"content":"\q"}}`, false},
		{"JSON content", `{"msg":{"content":"{\"text\":\"hello\/th\\ere\\tx\\b\\f\\r\"}"}}`, true},
		{"escaped NUL and BMP", `{"msg":{"content":"\u0000\u4F60\uffff\uFFFD"}}`, true},
		{"lone high surrogate", `{"msg":{"content":"\ud83d"}}`, false},
		{"lone low surrogate", `{"msg":{"content":"\ude00x"}}`, false},
		{"surrogate then BMP", `{"msg":{"content":"\ud83d\u0041"}}`, false},
		{"short unicode escape", `{"msg":{"content":"\u12"}}`, false},
		{"escape then invalid UTF-8", "{\"msg\":{\"content\":\"\\n\xff\"}}", false},
		{"escape at end", `{"msg":{"content":"\`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := checkFast(t, []byte(c.in)); got != c.fast {
				t.Fatalf("fast path answered %v, want %v", got, c.fast)
			}
		})
	}
}

// FuzzFastDecode: the fast path never disagrees with encoding/json.
func FuzzFastDecode(f *testing.F) {
	for _, glob := range []string{"v1/examples/*/*.json", "testdata/fuzz/FuzzDecode/*"} {
		files, _ := filepath.Glob(glob)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			// FuzzDecode's corpus files hold one []byte("...") literal.
			if lit, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte("); ok {
				s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimSpace(lit), ")"))
				if err != nil {
					f.Fatalf("%s: %v", p, err)
				}
				b = []byte(s)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkFast(t, data) })
}

// TestFastKeysMatchTags: each key list names exactly its struct's json
// fields, and each key fills the field encoding/json fills (checkFast
// compares the two) with a value of the field's type.
func TestFastKeysMatchTags(t *testing.T) {
	sample := map[reflect.Type]string{
		reflect.TypeFor[int](): "7", reflect.TypeFor[int64](): "-7", reflect.TypeFor[string](): `"s\u00e9"`,
		reflect.TypeFor[Type](): `"publish"`, reflect.TypeFor[bool](): "true", reflect.TypeFor[*bool](): "false",
		reflect.TypeFor[[]int64](): "[1,2]", reflect.TypeFor[[]json.RawMessage](): `[{"a":1},2]`,
		reflect.TypeFor[*Message](): `{"cmd":4}`, reflect.TypeFor[*Source](): `{"topic":"imr.publish"}`,
		reflect.TypeFor[[]byte](): `"AAE="`,
	}
	for _, c := range []struct {
		keys *keys
		typ  reflect.Type
		wrap string // the record around a {key: value} object
	}{
		{wireKeys, reflect.TypeFor[wire](), "%s"},
		{messageKeys, reflect.TypeFor[Message](), `{"msg":%s}`},
		{sourceKeys, reflect.TypeFor[Source](), `{"src":%s}`},
	} {
		fields := map[string]reflect.Type{}
		for _, f := range reflect.VisibleFields(c.typ) {
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" {
				fields[tag] = f.Type
			}
		}
		if len(fields) != len(c.keys.names) {
			t.Errorf("%s: %d keys for %d json fields", c.typ, len(c.keys.names), len(fields))
		}
		for i, k := range c.keys.names {
			if got := c.keys.index([]byte(k)); got != i {
				t.Errorf("%s: index(%q) = %d, want %d", c.typ, k, got, i)
			}
			ft, ok := fields[k]
			if !ok {
				t.Errorf("%s: key %q is no json field", c.typ, k)
				continue
			}
			if !checkFast(t, []byte(fmt.Sprintf(c.wrap, `{"`+k+`":`+sample[ft]+`}`))) {
				t.Errorf("%s: the fast path gave up on key %q", c.typ, k)
			}
		}
		if got := c.keys.index([]byte("no_such_key")); got != -1 {
			t.Errorf("%s: index of an unknown key = %d", c.typ, got)
		}
	}
}
