package groups

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// TestApply: a batch of group events is applied in order to the store and
// counted by type; the stage rejects nothing itself.
func TestApply(t *testing.T) {
	st := store.NewMemoryGroups()
	g, err := New(config.Default().Groups, testkit.StageEnv(config.Default()), st)
	if err != nil {
		t.Fatal(err)
	}
	h := func(typ schemas.Type) schemas.Header {
		return schemas.Header{V: 1, Type: typ, Server: "backend", AppID: 7}
	}
	evs := []*schemas.Group{
		{Header: h(schemas.TypeGroupCreate), GroupID: 55, Members: []int64{3, 1}},
		{Header: h(schemas.TypeGroupMemberAdd), GroupID: 55, UID: 2},
		{Header: h(schemas.TypeGroupMemberRemove), GroupID: 55, UID: 3},
	}
	var batch []stage.Decoded[*schemas.Group]
	for i, ev := range evs {
		batch = append(batch, stage.Decoded[*schemas.Group]{Event: ev, Msg: &kafka.Message{Offset: int64(i)}})
	}
	rejected, err := g.apply(context.Background(), stage.Batch{}, batch)
	if err != nil || len(rejected) != 0 {
		t.Fatalf("apply: %v, rejected %v", err, rejected)
	}
	grp, err := st.Group(context.Background(), 7, 55)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(grp.Members) != "[1 2]" {
		t.Errorf("members %v, want [1 2]", grp.Members)
	}
	if v := testutil.ToFloat64(g.events.WithLabelValues(string(schemas.TypeGroupMemberAdd))); v != 1 {
		t.Errorf("imstream_group_events_total{type=group_member_add} = %v", v)
	}
}
