// Package store holds the state the stages share: who is present where
// (PresenceStore, written by the presence stage) and group membership
// (GroupStore, written by the groups stage), each with a Redis and an
// in-memory implementation. The fanout only reads them, through these
// interfaces.
//
// # Redis layout
//
// All keys start with the configured prefix (default "imstream:"). Every key
// of one user, room or group shares one hash tag, so each write touches one
// slot (Redis Cluster safe); no operation spans users.
//
//	<p>srv:{<server>}        hash  epoch, lease (unix ms), down (epoch shut down cleanly, 0 none)
//	<p>servers               zset  server id → lease (unix ms; 0 when down): the index of servers
//	<p>u:{<appid>:<uid>}     hash  <server> → "<epoch>:<online 0|1>" for each server holding a subscription
//	<p>r:{<appid>:<room>}    hash  <server> → "<epoch>" for each server with a room subscriber
//	<p>g:{<appid>:<gid>}     hash  super (0|1), ver (bumped on every change), disbanded (1 after group_disband)
//	<p>g:{<appid>:<gid>}:m   set   member uids
//	<p>g:{<appid>:<gid>}:x   set   muted member uids
//
// A server is live when its lease runs at the time of the read and its
// current epoch is not the one shut down. A user or room entry counts only
// when its server is live and the entry's epoch is the server's current one:
// a dead server's users stop counting the moment its lease runs out, and a
// server_up with a new epoch voids the old epoch's entries at once. Stale
// entries are removed in the background (Collect); no reader depends on it.
// A group exists once created or once a member event names it, until
// group_disband; member events after a disband recreate it.
package store
