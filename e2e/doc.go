// Package e2e holds end-to-end tests: the real imstream binary's roles as
// separate processes, an embedded Kafka (kfake over TCP), a real
// redis-server, and IM servers built on the ingest library.
package e2e
