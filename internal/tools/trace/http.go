package trace

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Handler serves GET /trace?appid=&msgid=&uid=|group=|room=|broadcast=true&since=10m (or
// from=&to=, RFC 3339) as JSON: 200 with the trace when found, 404 with it
// when not, 504 with it when not found and a partition read gave up before
// its end (its unread field), 400 for a bad query.
func Handler(t *Tracer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := QueryOf(r.URL.Query().Get, time.Now())
		if err == nil {
			err = q.Check()
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		res, err := t.Trace(r.Context(), q)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		switch {
		case !res.Found && len(res.Unread) > 0: // not found in what was read: unknown
			w.WriteHeader(http.StatusGatewayTimeout)
		case !res.Found:
			w.WriteHeader(http.StatusNotFound)
		}
		_ = json.NewEncoder(w).Encode(res)
	})
}

// QueryOf reads a query from named values (a URL's query, flags): appid,
// msgid, uid, group, room or broadcast (true), and since (a duration before now) or from/to
// (RFC 3339); without any, the last 10 minutes.
func QueryOf(get func(string) string, now time.Time) (Query, error) {
	var q Query
	ints := map[string]*int64{"appid": &q.AppID, "msgid": &q.MsgID, "uid": &q.UID, "group": &q.Group, "room": &q.Room, "sender": &q.Sender}
	q.Content = get("content")
	for name, p := range ints {
		if v := get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return q, errors.Join(ErrQuery, errors.New(name+": want an integer"))
			}
			*p = n
		}
	}
	switch get("broadcast") {
	case "", "false", "0":
	case "true", "1":
		q.Broadcast = true
	default:
		return q, errors.Join(ErrQuery, errors.New("broadcast: want true or false"))
	}
	if v := get("presence-lookback"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return q, errors.Join(ErrQuery, errors.New("presence-lookback: want a positive duration such as 1h"))
		}
		q.Lookback = d
	}
	since := get("since")
	if since == "" && get("from") == "" {
		since = "10m"
	}
	if since != "" {
		d, err := time.ParseDuration(since)
		if err != nil {
			return q, errors.Join(ErrQuery, errors.New("since: want a duration such as 10m"))
		}
		q.Since = now.Add(-d)
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.Since}, {"to", &q.Until}} {
		if v := get(t.name); v != "" {
			tm, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return q, errors.Join(ErrQuery, errors.New(t.name+": want an RFC 3339 time"))
			}
			*t.dst = tm
		}
	}
	return q, nil
}
