// Command imstream is the imstream binary: one subcommand per role, plus
// dev (everything on one machine) and admin helpers. It only wires; the
// logic lives in the stage packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/wiring/role"
)

// runFunc runs a command with the loaded configuration.
type runFunc func(ctx context.Context, cfg config.Config) error

// usageError is a mistake in how the command was called (a flag, an
// argument, the configuration): exit status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitCode ends the command with an exit status of its own.
type exitCode struct {
	error
	code int
}

func (e exitCode) Unwrap() error { return e.error }

var commands = []struct {
	name, short, long string
	flags             func(*pflag.FlagSet) runFunc
}{
	{"dev", "Run everything on one machine: embedded Kafka and Redis, all roles, simulated traffic",
		"Starts an embedded Kafka (kfake) and Redis (redis-server when installed), every role and the gateway,\nand simulated IM servers; prints what flows every few seconds.", devFlags},
	{"all", "Run every consumer role in one process (presence, fanout, pusher)", "", rolesFlags(role.Roles...)},
	{"presence", "Consume imr.presence and imr.groups into Redis; serve /online", "", rolesFlags("presence")},
	{"fanout", "Route imr.publish and imr.publish.bulk to imr.deliver.<server> and imr.push", "", rolesFlags("fanout")},
	{"pusher", "Consume imr.push and append offline-push entries to the Redis lists", "", rolesFlags("pusher")},
	{"gateway", "Accept im_service IM servers on imr's protocol (point their route_addrs here)", "", rolesFlags("gateway")},
	{"loadgen", "Simulated IM servers at load (imr protocol or Kafka); reports sent, arrived, lost, doubled", "", loadgenFlags},
	{"bench", "Measure throughput and latency against baselines taken in the same run; prints a table", "", benchFlags},
	{"topics", "Create the topics with the configured partition counts", "", topicsFlags},
	{"status", "Show a running deployment: readiness, rates per stage, lag and time to drain, e2e p99, dead letters, presence",
		"Asks the processes' admin endpoints (--admin, repeatable or comma-separated) twice, --interval apart,\n" +
			"and Kafka for the dead letters of the last minute. --watch repeats until interrupted.", statusFlags},
	{"ready", "Exit 0 when the process at --admin is ready (/readyz 200), 1 otherwise: for container healthchecks", "", readyFlags},
	{"trace", "Where is my message? Find an event by appid and msgid and follow it through every hop",
		"Finds the publish event (--appid, --msgid, and --uid, --group, --room or --broadcast: the key it was sent with) in the\n" +
			"partitions its key maps to, from an offsets-by-time lookup (--since, or --from/--to), and follows it:\n" +
			"dead letters, fair share's spill topic, deliveries to IM servers, push jobs and whether their entries\n" +
			"were appended. Exit 0 when found, 1 when not found in the window, 2 for bad arguments.", traceFlags},
	{"reset-server", "Clear a server id's presence state: the escape hatch for a poisoned id (docs/runbook.md)", "", resetServerFlags},
}

const configHelp = `Every configuration key is also a flag (--kafka.brokers=a:9092,b:9092) and an
environment variable (IMSTREAM_KAFKA_BROKERS); flags win over the environment,
the environment over --config. deploy/imstream.example.yaml lists every key.`

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "imstream",
		Short: "A horizontally scalable message router for IM backends, on Kafka",
		Long: "imstream routes an IM backend's messages through Kafka: presence, fanout and pusher roles,\n" +
			"and a gateway that speaks im_service's router protocol.\n\n" + configHelp,
		Version:       obs.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("imstream {{.Version}}\n") // as `imstream version` prints it
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	for _, spec := range commands {
		c := &cobra.Command{Use: spec.name, Short: spec.short, Long: spec.short + ".", Args: cobra.NoArgs}
		if spec.long != "" {
			c.Long = spec.long
		}
		c.Long += "\n\n" + configHelp
		fs := c.Flags()
		run := spec.flags(fs)
		path := configFlags(fs)
		c.RunE = func(c *cobra.Command, _ []string) error {
			cfg, err := loadConfig(*path, fs)
			if err != nil {
				return usageError{err}
			}
			ctx := context.WithValue(c.Context(), reloadKey{}, func() (config.Config, error) { return loadConfig(*path, fs) })
			return run(ctx, cfg)
		}
		root.AddCommand(c)
	}
	root.AddCommand(dlqCmd())
	root.AddCommand(&cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) { fmt.Println("imstream", obs.Version) }})
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := rootCmd()
	c, err := root.ExecuteContextC(ctx)
	if err == nil {
		return
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "accepts 0 arg") {
		fmt.Fprintf(os.Stderr, "%s: %v\n\n", c.CommandPath(), err)
		if !strings.HasPrefix(err.Error(), "config") {
			_ = c.Usage()
		}
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", c.CommandPath(), err)
	var ec exitCode
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	os.Exit(1)
}
