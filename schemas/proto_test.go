package schemas

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// protoField is one field of schemas/v1/event.proto.
type protoField struct {
	name, typ string // typ: sint64, bool, string, bytes, or a message name
	repeated  bool
	optional  bool
}

var (
	protoMessage = regexp.MustCompile(`(?s)message (\w+) \{(.*?)\n\}`)
	protoDecl    = regexp.MustCompile(`(optional |repeated )?(\w+) (\w+) = (\d+);`)
)

// readProto returns event.proto's messages: field number → field.
func readProto(t *testing.T) map[string]map[protowire.Number]protoField {
	t.Helper()
	src, err := os.ReadFile("v1/event.proto")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[protowire.Number]protoField{}
	for _, m := range protoMessage.FindAllStringSubmatch(string(src), -1) {
		fields := map[protowire.Number]protoField{}
		for _, line := range strings.Split(m[2], "\n") {
			line, _, _ = strings.Cut(line, "//")
			for _, d := range protoDecl.FindAllStringSubmatch(line, -1) {
				var n int
				for _, c := range d[4] {
					n = n*10 + int(c-'0')
				}
				fields[protowire.Number(n)] = protoField{name: d[3], typ: d[2], repeated: d[1] == "repeated ", optional: d[1] == "optional "}
			}
		}
		out[m[1]] = fields
	}
	if len(out["Event"]) < 20 || len(out["Message"]) < 19 || len(out["Source"]) != 5 {
		t.Fatalf("event.proto: messages %v", out)
	}
	return out
}

// TestProtoFile: the binary codec writes what schemas/v1/event.proto says:
// every example record put in the binary format, read back field by field
// with the .proto's numbers and types alone, is its JSON (zero values
// aside, which the format leaves out); and docs/protocol.md prints that
// file.
func TestProtoFile(t *testing.T) {
	proto := readProto(t)
	files, _ := filepath.Glob("v1/examples/valid/*.json")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var w wire
			if err := json.Unmarshal(raw, &w); err != nil {
				t.Fatal(err)
			}
			got := readByProto(t, proto, "Event", binaryOf(t, &w))
			want := jsonValues(t, raw)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("read by event.proto:\n %v\nthe JSON:\n %v", got, want)
			}
		})
	}
	// Every field at once, none zero (the examples leave some out).
	t.Run("every field", func(t *testing.T) {
		yes, no := true, false
		job := []byte(`{"v":1,"type":"push_job","server":"s","appid":7,"receivers":[5],"msg":{"cmd":4,"sender":1,"receiver":5}}`)
		w := wire{Header: Header{V: 1, Type: TypePublish, Server: "im-1", AppID: 7, TS: 1700000000000, ID: "im-1:1:2"},
			Epoch: 3, UID: 4, Online: &yes, RoomID: 5, Receiver: 6, MsgID: 7, DeviceID: 8, Receivers: []int64{9, -10},
			OnlineOnly: &no, ExclOrigin: true, IMRTS: 11, GroupID: 12, Super: true, Members: []int64{13}, Mute: true,
			Jobs: []json.RawMessage{job}, MemberRange: []int64{14, 15}, Route: RouteIMR,
			Src: &Source{Topic: "imr.publish", Partition: 16, Offset: 17, Index: 18, Inc: "f19"},
			Msg: &Message{Cmd: 4, Flag: 1, Version: 2, Seq: 20, Sender: 21, Receiver: 22, Timestamp: 23, MsgID: 24, Content: "c",
				Notification: "n", CustomerAppID: 25, CustomerID: 26, StoreID: 27, SellerID: 28, SyncKey: 29, GroupID: 30,
				SenderAppID: 31, ReceiverAppID: 32, Raw: []byte{33}}}
		raw, err := json.Marshal(&w)
		if err != nil {
			t.Fatal(err)
		}
		got, want := readByProto(t, proto, "Event", binaryOf(t, &w)), jsonValues(t, raw)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("read by event.proto:\n %v\nthe JSON:\n %v", got, want)
		}
		for _, m := range []string{"Event", "Message", "Source"} {
			if n := len(proto[m]); n != countKeys(want, m) {
				t.Errorf("event.proto's %s has %d fields, the codec wrote %d", m, n, countKeys(want, m))
			}
		}
	})
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile("v1/event.proto")
	if !bytes.Contains(doc, append([]byte("```proto\n"), file...)) {
		t.Errorf("docs/protocol.md does not print schemas/v1/event.proto as it is")
	}
}

// readByProto decodes b as message name of proto into JSON-like values:
// int64, bool, string (bytes as base64), []any, map[string]any.
func readByProto(t *testing.T, proto map[string]map[protowire.Number]protoField, name string, b []byte) map[string]any {
	t.Helper()
	out := map[string]any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("%s: bad tag", name)
		}
		b = b[n:]
		f, ok := proto[name][num]
		if !ok {
			t.Fatalf("%s: field %d is not in event.proto", name, num)
		}
		want := protowire.BytesType
		if (f.typ == "sint64" || f.typ == "bool") && !f.repeated {
			want = protowire.VarintType
		}
		if typ != want {
			t.Fatalf("%s.%s (%d): wire type %d, event.proto says %s", name, f.name, num, typ, f.typ)
		}
		var v any
		switch {
		case typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			b = b[n:]
			if f.typ == "bool" {
				v = x != 0
			} else {
				v = protowire.DecodeZigZag(x)
			}
		default:
			x, n := protowire.ConsumeBytes(b)
			b = b[n:]
			switch {
			case f.repeated && f.typ == "sint64":
				var vs []any
				for len(x) > 0 {
					y, n := protowire.ConsumeVarint(x)
					x = x[n:]
					vs = append(vs, protowire.DecodeZigZag(y))
				}
				v = vs
			case f.typ == "string":
				v = string(x)
			case f.typ == "bytes" && f.name == "jobs":
				v = readByProto(t, proto, "Event", x)
			case f.typ == "bytes":
				v = base64.StdEncoding.EncodeToString(x)
			default:
				v = readByProto(t, proto, f.typ, x)
			}
		}
		if f.repeated && f.typ != "sint64" {
			prev, _ := out[f.name].([]any)
			v = append(prev, v)
		}
		out[f.name] = v
	}
	return out
}

// jsonValues reads a JSON record into the values readByProto gives,
// without the zero values the binary format leaves out.
func jsonValues(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return normalize(v).(map[string]any)
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		n, _ := x.Int64()
		return n
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			e = normalize(e)
			if e == nil || e == int64(0) || e == "" || e == false && k != "online" && k != "online_only" {
				continue
			}
			out[k] = e
		}
		return out
	}
	return v
}

// countKeys counts the fields of message m in v, read from the every-field
// event (Event: v itself; Message: its msg; Source: its src).
func countKeys(v map[string]any, m string) int {
	switch m {
	case "Message":
		return len(v["msg"].(map[string]any))
	case "Source":
		return len(v["src"].(map[string]any))
	}
	return len(v)
}
