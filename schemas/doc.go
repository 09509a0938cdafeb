// Package schemas defines imstream's v1 event format (docs/protocol.md §2): the Go types
// for presence, publish, push and group events and for the pusher's input
// record (PushJob), one Decode that validates a record and names the field
// that is wrong ("publish.msg.cmd: required"), and the JSON Schema files
// (schemas/v1/*.schema.json) with examples that producers in other
// languages validate against.
//
// Decoding never panics on any input; records larger than the configured
// limit (DefaultMaxBytes) are rejected before they are parsed.
package schemas
