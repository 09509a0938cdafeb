package schemas_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/imstream/imstream/schemas"
)

// FuzzDecode: Decode never panics; whatever it accepts re-encodes to a
// record it accepts again, unchanged.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("v1/examples/*/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := schemas.Decode(data, 4096)
		if err != nil {
			if _, ok := err.(*schemas.Error); !ok {
				t.Fatalf("error %T is not *schemas.Error", err)
			}
			return
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("marshal accepted event: %v", err)
		}
		ev2, err := schemas.Decode(b, 1<<20)
		if err != nil {
			t.Fatalf("re-encoded event rejected: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, ev2)
		}
	})
}
