package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/devcmd"
)

// devFlags declares dev's flags and returns its run.
func devFlags(fs *pflag.FlagSet) runFunc {
	dataDir := fs.String("data-dir", "", "persist Kafka and Redis data in this directory (default: in memory)")
	kafkaPort := fs.Int("kafka-port", 9092, "embedded Kafka port (0 picks a free one)")
	redisPort := fs.Int("redis-port", 0, "Redis port (0 picks a free one)")
	rate := fs.Int("rate", 200, "simulated events per second (0: no simulated traffic)")
	gw := fs.Bool("with-gateway", true, "also run the IMR-compatible gateway on gateway.listen (point an im_service IM server's route_addrs at it)")
	// --gateway was this flag's name; loadgen's --gateway is an address.
	fs.BoolVar(gw, "gateway", true, "")
	_ = fs.MarkDeprecated("gateway", "use --with-gateway (in loadgen --gateway is an address)")
	return func(ctx context.Context, cfg config.Config) error {
		return devcmd.Run(ctx, cfg, devcmd.Options{DataDir: *dataDir, KafkaPort: *kafkaPort, RedisPort: *redisPort, Rate: *rate, Gateway: *gw})
	}
}
