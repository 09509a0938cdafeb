package main

import (
	"context"

	"github.com/imstream/imstream/internal/dev"
)

func runDev(ctx context.Context, args []string) error {
	fs, path := configFlags("dev")
	dataDir := fs.String("data-dir", "", "persist Kafka and Redis data in this directory (default: in memory)")
	kafkaPort := fs.Int("kafka-port", 9092, "embedded Kafka port (0 picks a free one)")
	redisPort := fs.Int("redis-port", 0, "Redis port (0 picks a free one)")
	rate := fs.Int("rate", 200, "simulated events per second (0: no simulated traffic)")
	gw := fs.Bool("gateway", true, "also run the IMR-compatible gateway on gateway.listen (point an im_service IM server's route_addrs at it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfigFrom(*path, fs)
	if err != nil {
		return err
	}
	return dev.Run(ctx, cfg, dev.Options{DataDir: *dataDir, KafkaPort: *kafkaPort, RedisPort: *redisPort, Rate: *rate, Gateway: *gw})
}
