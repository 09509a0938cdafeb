package pusher

import (
	"bytes"
	"fmt"
	"testing"
)

// TestScriptRuns: a stream's entries are cut into script calls of at most
// scriptBytes, only between jobs; a job larger than that stays whole, and
// every entry is in exactly one run, in order.
func TestScriptRuns(t *testing.T) {
	var es []*Entry
	add := func(job int64, entries, size int) {
		for range entries {
			es = append(es, &Entry{Pos: job << 16, Job: job, Data: bytes.Repeat([]byte("x"), size)})
		}
	}
	add(1, 1, scriptBytes*2/5)
	add(2, 1, scriptBytes*2/5)
	add(3, 1, scriptBytes*2/5) // 6/5 of the bound: a cut before job 3
	add(4, 40, scriptBytes/20) // one job of twice the bound: never cut, alone
	add(5, 1, 10)
	runs := scriptRuns(es)
	var got []int
	n := 0
	for _, r := range runs {
		got = append(got, len(r))
		for i, e := range r {
			if e != es[n] {
				t.Fatalf("entry %d out of order", n)
			}
			if i == 0 && n > 0 && e.Job == es[n-1].Job {
				t.Fatalf("a run starts inside job %d", e.Job)
			}
			n++
		}
	}
	if n != len(es) || fmt.Sprint(got) != "[2 1 40 1]" {
		t.Fatalf("runs of %v entries (%d of %d), want [2 1 40 1]", got, n, len(es))
	}
}
