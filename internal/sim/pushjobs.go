// Package sim generates sample traffic for `imstream dev` and the load
// generator.
package sim

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/schemas"
)

// PushJobs writes a mix of push jobs (every pushable cmd) to topic at about
// rate records per second until ctx ends. It returns the number written.
func PushJobs(ctx context.Context, w *kafka.Writer, topic string, appid int64, rate int) (int, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	per := max(rate/10, 1)
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n, nil
		case <-tick.C:
		}
		batch := make([]kafka.Message, 0, per)
		for i := 0; i < per; i++ {
			job := SampleJob(rng, appid)
			b, _ := json.Marshal(job)
			batch = append(batch, kafka.Message{Topic: topic, Key: []byte(strconv.FormatInt(appid, 10) + ":" + strconv.FormatInt(job.Receivers[0], 10)), Value: b})
		}
		if err := kafkax.Write(ctx, w, batch...); err != nil {
			if ctx.Err() != nil {
				return n, nil
			}
			return n, err
		}
		n += len(batch)
	}
}

// SampleJob returns a random push job of a random pushable cmd.
func SampleJob(rng *rand.Rand, appid int64) *schemas.PushJob {
	sender := 1 + rng.Int64N(1000)
	recv := 1 + rng.Int64N(1000)
	msg := schemas.Message{Sender: sender, Receiver: recv, Content: "hello from " + strconv.FormatInt(sender, 10)}
	receivers := []int64{recv}
	switch rng.IntN(10) {
	case 0, 1, 2, 3, 4:
		msg.Cmd = schemas.CmdIM
	case 5, 6:
		msg.Cmd = schemas.CmdGroupIM
		msg.Receiver = 1 + rng.Int64N(50)
		receivers = []int64{recv, recv + 1, recv + 2}
	case 7:
		msg.Cmd = schemas.CmdCustomer
		msg.CustomerAppID, msg.CustomerID, msg.StoreID, msg.SellerID = appid, sender, 1, 2
	case 8:
		msg.Cmd = schemas.CmdCustomerV2
		msg.SenderAppID, msg.ReceiverAppID = appid, appid
	default:
		msg.Cmd = schemas.CmdSystem
		msg.Notification = "system notice"
	}
	return &schemas.PushJob{
		Header:    schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "sim", AppID: appid, TS: time.Now().UnixMilli()},
		Receivers: receivers, Msg: msg,
	}
}
