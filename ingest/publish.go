package ingest

import (
	"context"

	"github.com/imstream/imstream/schemas"
)

// Publish routes a peer message to receiver (docs/protocol.md §4 publish).
func (p *Producer) Publish(ctx context.Context, appid, receiver int64, msg schemas.Message, meta Meta) error {
	return p.send(ctx, p.enc.Publish(appid, receiver, msg, meta))
}

// PublishGroup routes a group message (docs/protocol.md §4 publish_group).
func (p *Producer) PublishGroup(ctx context.Context, appid, group int64, msg schemas.Message, meta Meta) error {
	return p.send(ctx, p.enc.PublishGroup(appid, group, msg, meta))
}

// PublishRoom routes a room message (docs/protocol.md §4 publish_room).
func (p *Producer) PublishRoom(ctx context.Context, appid, room int64, msg schemas.Message, meta Meta) error {
	return p.send(ctx, p.enc.PublishRoom(appid, room, msg, meta))
}

// Push asks for offline pushes of msg to whichever receivers are offline
// (im_service's MSG_PUSH). The record is keyed by the first receiver, so a
// single-receiver push keeps its order with that receiver's messages.
func (p *Producer) Push(ctx context.Context, appid int64, receivers []int64, msg schemas.Message) error {
	if len(receivers) == 0 {
		return nil
	}
	return p.send(ctx, p.enc.Push(appid, receivers, msg))
}
