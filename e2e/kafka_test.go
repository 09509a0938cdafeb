package e2e_test

import "github.com/segmentio/kafka-go"

type kafkaMessage = kafka.Message

type kafkaHeader = kafka.Header
