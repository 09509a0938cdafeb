package kafkax

import (
	"errors"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/schemas"
)

// StageConsumer returns the consume-loop settings of a stage: the shared
// consumer section plus the stage's group, topics and batch limits.
func StageConsumer(c config.Consumer, group string, topics []string, maxBatch int, maxWait time.Duration, log *slog.Logger, hooks Hooks) ConsumerConfig {
	return ConsumerConfig{
		Group: group, Topics: topics, MaxBatch: maxBatch, MaxWait: maxWait,
		QueueSize: c.QueueSize, MaxFetchBytes: c.MaxFetchBytes,
		RetryMin: c.RetryMin, RetryMax: c.RetryMax,
		SessionTimeout: c.SessionTimeout, HeartbeatInterval: c.HeartbeatInterval, RebalanceTimeout: c.RebalanceTimeout,
		Logger: log, Hooks: hooks,
	}
}

// NewDeadLetter returns the dead-letter writer of a stage.
func (c *Conn) NewDeadLetter(k config.Kafka, stage string, onReject func(reason string)) *DeadLetter {
	return &DeadLetter{W: c.NewWriter(k, k.Topics.DLQ), Stage: stage, OnReject: onReject}
}

// Reject classifies a decode error of m for the dead-letter topic.
func Reject(m kafka.Message, err error) Rejected {
	var se *schemas.Error
	if errors.As(err, &se) {
		return Rejected{Msg: m, Code: se.Reason, Reason: se.Error()}
	}
	return Rejected{Msg: m, Code: "invalid", Reason: err.Error()}
}
