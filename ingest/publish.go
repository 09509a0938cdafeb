package ingest

import (
	"context"

	"github.com/imstream/imstream/schemas"
)

// Meta carries the optional per-message fields of a publish event.
type Meta struct {
	MsgID    int64
	DeviceID int64
}

// Publish routes a peer message to receiver (SPEC §4 publish).
func (p *Producer) Publish(ctx context.Context, appid, receiver int64, msg schemas.Message, meta Meta) error {
	ev := &schemas.Publish{Header: p.header(schemas.TypePublish, appid), Receiver: receiver, MsgID: meta.MsgID, DeviceID: meta.DeviceID, Msg: msg}
	return p.send(ctx, p.cfg.PublishTopic, UserKey(appid, receiver), ev)
}

// PublishGroup routes a group message (SPEC §4 publish_group).
func (p *Producer) PublishGroup(ctx context.Context, appid, group int64, msg schemas.Message, meta Meta) error {
	ev := &schemas.Publish{Header: p.header(schemas.TypePublishGroup, appid), Receiver: group, MsgID: meta.MsgID, DeviceID: meta.DeviceID, Msg: msg}
	return p.send(ctx, p.cfg.PublishTopic, GroupKey(appid, group), ev)
}

// PublishRoom routes a room message (SPEC §4 publish_room).
func (p *Producer) PublishRoom(ctx context.Context, appid, room int64, msg schemas.Message, meta Meta) error {
	ev := &schemas.Publish{Header: p.header(schemas.TypePublishRoom, appid), Receiver: room, MsgID: meta.MsgID, DeviceID: meta.DeviceID, Msg: msg}
	return p.send(ctx, p.cfg.PublishTopic, RoomKey(appid, room), ev)
}

// Push asks for offline pushes of msg to whichever receivers are offline
// (im_service's MSG_PUSH). The record is keyed by the first receiver, so a
// single-receiver push keeps its order with that receiver's messages.
func (p *Producer) Push(ctx context.Context, appid int64, receivers []int64, msg schemas.Message) error {
	if len(receivers) == 0 {
		return nil
	}
	ev := &schemas.Publish{Header: p.header(schemas.TypePush, appid), Receivers: receivers, Msg: msg}
	return p.send(ctx, p.cfg.PublishTopic, UserKey(appid, receivers[0]), ev)
}
