// Command imstream is the imstream binary: one subcommand per role, plus
// dev (everything on one machine) and admin helpers. It only wires; the
// logic lives in the stage packages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imstream/imstream/internal/role"
)

var commands = map[string]struct {
	run  func(ctx context.Context, args []string) error
	help string
}{
	"presence":     {runRoles("presence", "presence"), "consume imr.presence and imr.groups into Redis; serve /online"},
	"fanout":       {runRoles("fanout", "fanout"), "route imr.publish to imr.deliver.<server> and imr.push"},
	"pusher":       {runRoles("pusher", "pusher"), "consume imr.push and append offline-push entries to the Redis lists"},
	"all":          {runRoles("all", role.Roles...), "every consumer role in one process (presence, fanout, pusher)"},
	"gateway":      {runRoles("gateway", "gateway"), "accept im_service IM servers on imr's protocol (point their route_addrs here)"},
	"dev":          {runDev, "run everything on one machine: embedded Kafka and Redis, all roles, simulated traffic"},
	"bench":        {runBench, "measure throughput and latency against baselines taken in the same run; prints a table"},
	"loadgen":      {runLoadgen, "simulated IM servers at load (imr protocol or Kafka); reports sent, arrived, lost, doubled"},
	"topics":       {runTopics, "create the topics with the configured partition counts"},
	"version":      {runVersion, "print the version"},
	"reset-server": {runResetServer, "clear a server id's presence state (--server ID): the escape hatch for a poisoned id, see docs/runbook.md"},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: imstream <command> [--config file.yaml] [--<key>=<value> ...]\n\ncommands:\n")
	for _, name := range []string{"dev", "all", "presence", "fanout", "pusher", "gateway", "loadgen", "bench", "topics", "reset-server", "version"} {
		fmt.Fprintf(os.Stderr, "  %-13s %s\n", name, commands[name].help)
	}
	fmt.Fprintf(os.Stderr, "\nEvery configuration key is also a flag (--kafka.brokers=a:9092,b:9092) and an\nenvironment variable (IMSTREAM_KAFKA_BROKERS); see deploy/imstream.example.yaml.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "imstream: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "imstream %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
