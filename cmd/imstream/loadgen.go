package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/devcmd"
	"github.com/imstream/imstream/internal/tools/loadgen"
)

// loadgenFlags declares loadgen's flags and returns its run.
func loadgenFlags(fs *pflag.FlagSet) runFunc {
	o := loadgen.Options{Out: os.Stdout}
	fs.StringVar(&o.Protocol, "protocol", "imr", "imr: TCP to a gateway (or imr); kafka: the ingest library")
	fs.StringVar(&o.Gateway, "gateway", "", "gateway address for --protocol imr (default: gateway.listen)")
	fs.IntVar(&o.Servers, "servers", 4, "simulated IM servers (connections)")
	fs.IntVar(&o.Users, "users", 100, "online users per server")
	fs.IntVar(&o.Pushes, "pushes", 100000, "MSG_PUSH messages to offline users")
	fs.IntVar(&o.RT, "rt", 10000, "RT messages to online users on other servers")
	fs.BoolVar(&o.Churn, "churn", true, "users connect and leave during the run")
	fs.BoolVar(&o.IMR, "imr", false, "the target is im_service's imr: no presence wait, stop 5 s after the last push entry (imr drops)")
	report := fs.String("json", "", "also write the report as JSON to this file")
	embedded := fs.Bool("embedded", false, "start the whole stack in this process (embedded Kafka and Redis, every role, the gateway)")
	return func(ctx context.Context, cfg config.Config) error {
		if o.Protocol != "imr" && o.Protocol != "kafka" {
			return errors.New("--protocol must be imr or kafka")
		}
		if *embedded {
			cfg.Gateway.Listen = "127.0.0.1:0"
			cfg.Admin.Listen = "127.0.0.1:0"
			cfg.Log.Level = "warn"
			st, err := devcmd.Up(ctx, cfg, devcmd.Options{KafkaPort: 0, Gateway: o.Protocol == "imr"})
			if err != nil {
				return err
			}
			defer st.Close()
			cfg = st.Cfg
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() { _ = st.Env.Run(rctx, st.Runs...) }()
			if o.Protocol == "imr" {
				if o.Gateway, err = st.Env.Gateway.Addr(ctx); err != nil {
					return err
				}
			}
			fmt.Printf("embedded stack: kafka %s, redis %s, gateway %s\n", st.Kafka.Addr, st.Redis.Addr, o.Gateway)
		}
		if o.Gateway == "" {
			o.Gateway = cfg.Gateway.Listen
		}
		rc, err := redisx.New(cfg.Redis)
		if err != nil {
			return err
		}
		defer rc.Close()
		rep, err := loadgen.Run(ctx, cfg, rc, o)
		if err != nil {
			return err
		}
		fmt.Println(rep)
		if *report != "" {
			b, _ := json.Marshal(rep)
			if err := os.WriteFile(*report, b, 0o644); err != nil {
				return err
			}
		}
		if !o.IMR && (rep.PushLost > 0 || rep.PushDoubled > 0 || rep.RTLost > 0) {
			return fmt.Errorf("lost or doubled messages")
		}
		return nil
	}
}
