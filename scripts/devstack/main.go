// Command devstack runs the whole Terroir stack on one machine: an embedded
// Kafka-protocol broker, Redis, the dev keyring, and every service as a child
// process whose output is prefixed with its name. With -smoke it starts the
// stack, waits for every service to report ready, and stops it again.
//
// It is what `make run` and `make smoke` call; run it from anywhere inside
// the repository (it finds the root by walking up to go.work). State lives
// under <root>/.terroir: kafka/ (broker data), redis/ (append-only file),
// keys/keyring.json (dev keyring), bin/ (service binaries).
//
// Flags:
//
//	-kafka ADDR         embedded broker address (default 127.0.0.1:9092)
//	-redis ADDR         Redis address (default 127.0.0.1:6390); redis-server
//	                    from PATH, else an embedded in-memory server
//	-services=false     start only the broker, Redis and the keyring
//	-smoke              wait for every /readyz, print a table, stop
//	-timeout D          readiness deadline for -smoke (default 90s)
//	-stop-timeout D     time services get after SIGTERM (default 20s)
//	-dir DIR            where to start looking for go.work (default: cwd)
//	-state DIR          state directory (default: <root>/.terroir)
//
// TERROIR_DEVSTACK_PROCS sets the GOMAXPROCS of the launcher (its work
// is the embedded broker) and of every service it starts (default 1); a
// GOMAXPROCS in the environment overrides it for the services.
//
// Exit status: 0 when everything started and stopped cleanly (and, with
// -smoke, every service was ready), 1 otherwise, 2 for bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

func main() {
	runtime.GOMAXPROCS(procs())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(1)
	}
}

// procs is the GOMAXPROCS of the launcher and of the services it starts:
// TERROIR_DEVSTACK_PROCS, default 1. Every process of the stack shares
// one machine, and each spends its time waiting on the others: with one
// P, a goroutine woken by the network runs on the thread that woke, not
// on a second thread woken for it. In stackbench one P cut the broker's
// CPU per request by a quarter at 200 req/s, and one P in every service
// cut the stack's by another fifth, with less added latency at 1,000
// req/s, not more.
func procs() int {
	if n, err := strconv.Atoi(os.Getenv("TERROIR_DEVSTACK_PROCS")); err == nil && n > 0 {
		return n
	}
	return 1
}
