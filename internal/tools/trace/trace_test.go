package trace

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

// TestQueryOf: a query from a URL's values or flags — integers, a window
// as since or from/to (10 minutes when neither) — and what Check refuses.
func TestQueryOf(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		in    string
		since time.Time
		until time.Time
		bad   bool // QueryOf or Check refuses it
	}{
		{"appid=7&msgid=123&uid=101", now.Add(-10 * time.Minute), time.Time{}, false},
		{"appid=7&msgid=123&group=9000&since=1h", now.Add(-time.Hour), time.Time{}, false},
		{"appid=7&msgid=123&room=5&from=2027-01-15T08:00:00Z&to=2027-01-15T09:00:00Z",
			time.Date(2027, 1, 15, 8, 0, 0, 0, time.UTC), time.Date(2027, 1, 15, 9, 0, 0, 0, time.UTC), false},
		{"appid=7&msgid=123", time.Time{}, time.Time{}, true},                            // no receiver
		{"appid=7&uid=1&content=typing", now.Add(-10 * time.Minute), time.Time{}, false}, // no msgid: by content
		{"appid=7&uid=1&sender=2", now.Add(-10 * time.Minute), time.Time{}, false},       // or by sender
		{"appid=7&uid=1", time.Time{}, time.Time{}, true},                                // nothing names the event
		{"appid=7&msgid=123&uid=1&group=2", time.Time{}, time.Time{}, true},              // two
		{"appid=7&msgid=123&broadcast=true", now.Add(-10 * time.Minute), time.Time{}, false},
		{"appid=7&msgid=123&broadcast=true&uid=1", time.Time{}, time.Time{}, true}, // two
		{"msgid=123&uid=1", time.Time{}, time.Time{}, true},                        // no app
		{"appid=x&msgid=123&uid=1", time.Time{}, time.Time{}, true},                // not an integer
		{"appid=7&msgid=123&uid=1&since=soon", time.Time{}, time.Time{}, true},     // not a duration
	} {
		v, _ := url.ParseQuery(tc.in)
		q, err := QueryOf(v.Get, now)
		if err == nil {
			err = q.Check()
		}
		if tc.bad {
			if !errors.Is(err, ErrQuery) {
				t.Errorf("%s: err %v, want ErrQuery", tc.in, err)
			}
			continue
		}
		if err != nil || !q.Since.Equal(tc.since) || !q.Until.Equal(tc.until) {
			t.Errorf("%s: %+v, %v; want since %s until %s", tc.in, q, err, tc.since, tc.until)
		}
	}
}
