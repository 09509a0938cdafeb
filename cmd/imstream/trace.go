package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/trace"
)

// errNotFound ends a trace that found nothing: exit status 1.
var errNotFound = errors.New("not found in the window")

// errIncomplete ends a trace that gave up reading a partition before its
// end (found or not): exit status 3.
var errIncomplete = exitCode{errors.New("incomplete: a partition read gave up before its end (see unread; raise --read-timeout)"), 3}

// traceFlags declares trace's flags and returns its run.
func traceFlags(fs *pflag.FlagSet) runFunc {
	vals := map[string]*string{}
	for _, f := range []struct{ name, help string }{
		{"appid", "the event's app (required)"}, {"msgid", "the event's msgid (or name it by --sender and/or --content)"},
		{"sender", "the inner message's sender (for messages without a msgid: RT, room messages)"}, {"content", "text found in the message's content, notification or raw inner frame"},
		{"uid", "the receiver it was sent to (a peer message or MSG_PUSH's first receiver)"}, {"group", "the group it was sent to"}, {"room", "the room it was sent to"},
		{"since", "look this far back (default 10m)"}, {"presence-lookback", "how far before a peer message its receiver's presence events are read (default 1h)"}, {"from", "look from this time (RFC 3339) instead"}, {"to", "look until this time (RFC 3339; default now)"},
	} {
		vals[f.name] = fs.String(f.name, "", f.help)
	}
	broadcast := fs.Bool("broadcast", false, "the event is one of the app's broadcasts (publish_broadcast)")
	asJSON := fs.Bool("json", false, "print the trace as JSON")
	readTimeout := fs.Duration("read-timeout", trace.DefaultReadTimeout, "give up on a partition when its next record does not arrive within this (exit status 3, what was not read listed)")
	return func(ctx context.Context, cfg config.Config) error {
		q, err := trace.QueryOf(func(k string) string {
			if k == "broadcast" {
				return strconv.FormatBool(*broadcast)
			}
			return *vals[k]
		}, time.Now())
		if err == nil {
			err = q.Check()
		}
		if err != nil {
			return usageError{err}
		}
		return runTrace(ctx, cfg, q, *readTimeout, *asJSON, os.Stdout)
	}
}

func runTrace(ctx context.Context, cfg config.Config, q trace.Query, readTimeout time.Duration, asJSON bool, out io.Writer) error {
	conn, err := kafkax.NewConn(cfg.Kafka)
	if err != nil {
		return err
	}
	rc, err := redisx.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	t := &trace.Tracer{Conn: conn, Kafka: cfg.Kafka, Pusher: cfg.Pusher, Redis: rc, Prefix: cfg.Redis.KeyPrefix, Lease: cfg.Presence.Lease, ReadTimeout: readTimeout}
	res, err := t.Trace(ctx, q)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(out, string(b))
	} else {
		printTrace(out, res)
	}
	switch {
	case len(res.Unread) > 0:
		return errIncomplete
	case !res.Found:
		return errNotFound
	}
	return nil
}

// printTrace prints a trace as a timeline: each hop with its time after
// the input's.
func printTrace(out io.Writer, res trace.Result) {
	var t0 time.Time
	for i, h := range res.Hops {
		at := h.Time.UTC().Format("15:04:05.000")
		if i == 0 {
			t0 = h.Time
		} else if !t0.IsZero() {
			at += fmt.Sprintf(" +%s", h.Time.Sub(t0).Round(time.Millisecond))
		}
		fmt.Fprintf(out, "%-22s %-12s %s/%d@%d  %s\n", at, h.What, h.Topic, h.Partition, h.Offset, h.Detail)
		if h.Decision != "" {
			fmt.Fprintf(out, "%-22s %-12s %s (presence as applied through %s)\n", "", "decided", h.Decision, h.PresenceAt.UTC().Format("15:04:05.000"))
		}
	}
	if len(res.Presence) > 0 {
		fmt.Fprintln(out, "the receiver's presence in the log:")
	}
	for _, h := range res.Presence {
		fmt.Fprintf(out, "%-22s %-12s %s/%d@%d  %s\n", h.Time.UTC().Format("15:04:05.000"), h.What, h.Topic, h.Partition, h.Offset, h.Detail)
	}
	for _, n := range res.Notes {
		fmt.Fprintln(out, "note: "+n)
	}
	for _, u := range res.Unread {
		fmt.Fprintf(out, "unread: %s/%d offsets [%d, %d): read [%d, %d), then gave up\n", u.Topic, u.Partition, u.Next, u.End, u.From, u.Next)
	}
}
