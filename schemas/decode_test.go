package schemas_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/imstream/imstream/schemas"
)

const schemaID = "https://imstream.dev/schemas/v1/"

var kinds = map[string]schemas.Kind{
	"presence": schemas.KindPresence, "publish": schemas.KindPublish,
	"group": schemas.KindGroup, "push_job": schemas.KindPushJob, "push_jobs": schemas.KindPushJob,
}

func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files, _ := filepath.Glob("v1/*.schema.json")
	for _, f := range files {
		_, doc := readJSON(t, f)
		if err := c.AddResource(schemaID+filepath.Base(f), doc); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for name := range kinds {
		s, err := c.Compile(schemaID + name + ".schema.json")
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func readJSON(t *testing.T, path string) (raw []byte, doc any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err = jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return raw, doc
}

// TestValidExamples: every valid example passes both the Go decoder and its
// JSON Schema, and decodes to the right family.
func TestValidExamples(t *testing.T) {
	sch := compileSchemas(t)
	files, _ := filepath.Glob("v1/examples/valid/*.json")
	if len(files) < 10 {
		t.Fatalf("only %d valid examples", len(files))
	}
	for _, f := range files {
		family := strings.SplitN(filepath.Base(f), ".", 2)[0]
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, doc := readJSON(t, f)
			ev, err := schemas.Decode(raw, 0)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := ev.Head().Type.Kind(); got != kinds[family] {
				t.Fatalf("kind = %v, want %v", got, kinds[family])
			}
			if err := sch[family].Validate(doc); err != nil {
				t.Fatalf("JSON Schema rejects a valid example: %v", err)
			}
		})
	}
}

// TestInvalidExamples: every invalid example is rejected by the Go decoder
// with an error naming the field, and by the JSON Schema.
func TestInvalidExamples(t *testing.T) {
	want := map[string]string{
		"presence.subscribe.no_online.json":         "subscribe.online: required",
		"presence.uid_string.json":                  "unsubscribe.uid: want integer, got string",
		"presence.no_epoch.json":                    "heartbeat.epoch: required",
		"publish.no_cmd.json":                       "publish.msg.cmd: required",
		"publish.unknown_cmd.json":                  "publish.msg.cmd: unknown cmd 99",
		"publish.bad_server.json":                   "publish.server: must match [A-Za-z0-9._-]{1,64}",
		"publish.push_no_receivers.json":            "push.receivers: required",
		"record.version2.json":                      "record.v: unsupported version 2",
		"record.unknown_type.json":                  `record.type: unknown type "wave"`,
		"record.negative_appid.json":                "heartbeat.appid: must be > 0",
		"group.no_group_id.json":                    "group_disband.group_id: required",
		"push_job.rt.json":                          "push_job.msg.cmd: cmd 17 has no push list",
		"push_job.range_not_group.json":             "push_job.msg.cmd: member_range is for GROUP_IM (8), not cmd 4",
		"push_jobs.empty.json":                      "push_jobs.jobs: must not be empty",
		"push_jobs.rt_job.json":                     "push_jobs.jobs[1].push_job.msg.cmd: cmd 17 has no push list",
		"publish.broadcast_online_only_string.json": "publish_broadcast.online_only: want boolean, got string",
		"publish.imr_no_raw.json":                   "publish.msg.raw: required",
		"publish.route_unknown.json":                `publish.route: must be absent or "imr" (not on publish_broadcast)`,
	}
	sch := compileSchemas(t)
	files, _ := filepath.Glob("v1/examples/invalid/*.json")
	if len(files) != len(want) {
		t.Fatalf("%d invalid examples, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, doc := readJSON(t, f)
			_, err := schemas.Decode(raw, 0)
			if err == nil || err.Error() != want[name] {
				t.Fatalf("Decode error = %v, want %q", err, want[name])
			}
			family := strings.SplitN(name, ".", 2)[0]
			for fam, s := range sch {
				if family != "record" && fam != family {
					continue
				}
				if s.Validate(doc) == nil {
					t.Errorf("%s JSON Schema accepts an invalid example", fam)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	big := `{"v":1,"type":"publish","server":"im-1","appid":7,"receiver":1,"msg":{"cmd":4,"sender":1,"receiver":1,"content":"` + strings.Repeat("x", schemas.DefaultMaxBytes) + `"}}`
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	tests := []struct {
		name, in, want, reason string
	}{
		{"bad json", `{"v":1,`, "record: invalid JSON", schemas.ReasonInvalidJSON},
		{"not an object", `[1,2]`, "record: want object, got array", schemas.ReasonWrongType},
		{"empty", ``, "record: invalid JSON", schemas.ReasonInvalidJSON},
		{"oversize", big, "record: 65", schemas.ReasonOversize},
		{"deeply nested", deep, "record:", ""},
		{"no v", `{"type":"heartbeat"}`, "record.v: required", schemas.ReasonRequired},
		{"cmd as string", `{"v":1,"type":"publish","server":"a","appid":1,"receiver":2,"msg":{"cmd":"4"}}`, "publish.msg.cmd: want integer, got string", schemas.ReasonWrongType},
		{"zero receiver", `{"v":1,"type":"publish","server":"a","appid":1,"receiver":0,"msg":{"cmd":4,"sender":1,"receiver":2}}`, "publish.receiver: required", schemas.ReasonRequired},
		{"negative uid", `{"v":1,"type":"subscribe","server":"a","appid":1,"epoch":1,"uid":-5,"online":true}`, "subscribe.uid: must be > 0", schemas.ReasonInvalid},
		{"float id", `{"v":1,"type":"unsubscribe","server":"a","appid":1,"epoch":1,"uid":1.5}`, "unsubscribe.uid: want integer, got number 1.5", schemas.ReasonWrongType},
		{"int64 overflow", `{"v":1,"type":"unsubscribe","server":"a","appid":1,"epoch":1,"uid":9223372036854775808}`, "unsubscribe.uid: want integer", schemas.ReasonWrongType},
		{"negative ts", `{"v":1,"type":"heartbeat","server":"a","appid":1,"epoch":1,"ts":-1}`, "heartbeat.ts: must be >= 0", schemas.ReasonInvalid},
		{"server too long", `{"v":1,"type":"heartbeat","server":"` + strings.Repeat("a", 65) + `","appid":1,"epoch":1}`, "heartbeat.server: must match", schemas.ReasonInvalid},
		{"group member zero", `{"v":1,"type":"group_create","server":"a","appid":1,"group_id":3,"members":[1,0]}`, "group_create.members: every member must be > 0", schemas.ReasonInvalid},
		{"customer v2 missing", `{"v":1,"type":"publish","server":"a","appid":1,"receiver":2,"msg":{"cmd":64,"sender_appid":1,"sender":1,"receiver_appid":1}}`, "publish.msg.receiver: required", schemas.ReasonRequired},
		{"bad base64", `{"v":1,"type":"publish","server":"a","appid":1,"receiver":2,"msg":{"cmd":17,"sender":1,"receiver":2,"raw":"@@@"}}`, "publish.msg.raw: invalid base64", schemas.ReasonWrongType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schemas.Decode([]byte(tt.in), 0)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want prefix %q", err, tt.want)
			}
			var se *schemas.Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not *schemas.Error", err)
			}
			if tt.reason != "" && se.Reason != tt.reason {
				t.Fatalf("reason = %s, want %s", se.Reason, tt.reason)
			}
		})
	}
}

func TestDecodeKind(t *testing.T) {
	raw := []byte(`{"v":1,"type":"heartbeat","server":"a","appid":1,"epoch":1}`)
	if _, err := schemas.DecodeKind(raw, 0, schemas.KindPresence); err != nil {
		t.Fatal(err)
	}
	_, err := schemas.DecodeKind(raw, 0, schemas.KindPushJob)
	if err == nil || err.Error() != "heartbeat.type: a presence event does not belong on a push_job topic" {
		t.Fatalf("err = %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("v1/examples/valid/*.json")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		ev, err := schemas.Decode(raw, 0)
		if err != nil {
			t.Fatal(err)
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := schemas.Decode(again, 0)
		if err != nil {
			t.Fatalf("%s: re-encoded record rejected: %v\n%s", f, err, again)
		}
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("%s: round trip changed the event:\n%+v\n%+v", f, ev, ev2)
		}
	}
}

// TestSchemaDescriptions: every field of every v1 schema says what it is
// (fields inside if-conditions and $ref-only fields excepted), since
// producers in other languages read the schemas as documentation.
func TestSchemaDescriptions(t *testing.T) {
	files, err := filepath.Glob("v1/*.schema.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas: %v", err)
	}
	var walk func(file, path string, n any)
	walk = func(file, path string, n any) {
		m, ok := n.(map[string]any)
		if !ok {
			if l, ok := n.([]any); ok {
				for _, x := range l {
					walk(file, path, x)
				}
			}
			return
		}
		if props, ok := m["properties"].(map[string]any); ok && !strings.HasSuffix(path, "/if") {
			for k, v := range props {
				f, _ := v.(map[string]any)
				if _, ref := f["$ref"]; f != nil && !ref && f["description"] == nil && !strings.Contains(path, "allOf") {
					t.Errorf("%s: field %s%s has no description", file, path, "."+k)
				}
			}
		}
		for k, v := range m {
			walk(file, path+"/"+k, v)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(f, "", doc)
	}
}
