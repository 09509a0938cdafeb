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

// Broadcast sends msg to every connected, online user of appid, this
// server's too: the fanout writes one delivery per live IM server hosting a
// present user of the app (Delivery.Type is schemas.TypePublishBroadcast),
// and each server hands it to its own connected users of the app. Users
// without a connection get nothing, not even a push-list entry: to reach
// them, Push to their uids.
func (p *Producer) Broadcast(ctx context.Context, appid int64, msg schemas.Message) error {
	return p.BroadcastWith(ctx, appid, msg, BroadcastOptions{})
}

// BroadcastWith is Broadcast with options.
func (p *Producer) BroadcastWith(ctx context.Context, appid int64, msg schemas.Message, o BroadcastOptions) error {
	return p.send(ctx, p.enc.Broadcast(appid, msg, o))
}

// BroadcastOptions qualify a broadcast (docs/protocol.md §2).
type BroadcastOptions struct {
	// AllConnected reaches every connected user of the app, online or not
	// (online_only false); by default only the online ones.
	AllConnected bool
	// ExcludeOrigin leaves out the sending server's own users
	// (exclude_origin).
	ExcludeOrigin bool
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
