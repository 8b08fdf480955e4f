// Command gatewayload opens many tenten.interview.Gateway/Connect streams on ONE grpc-go
// connection, with grpc-go's default dial options (so BDP estimation is on: a PING for
// almost every message received), answers every Ping with a Pong, and reports whether the
// server ended any stream or the connection.
//
// Usage: gatewayload -target HOST:PORT [-streams 200] [-seconds 20] [-id-prefix go]
//
// Prints one JSON line (streams, ended_by_server, errors by "CODE: message", pings_min,
// pings_max, pings_total, wall_s) and exits 0 only when no stream was ended by the server
// and every stream got a ping. The two messages are encoded by hand (a bytes codec), so no
// generated code is needed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"gatewaywire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type result struct {
	pings int
	err   string // "CODE: message" when the server ended the stream
}

func run(ctx context.Context, conn *grpc.ClientConn, id string, stopping func() bool) result {
	var r result
	ctx = metadata.AppendToOutgoingContext(ctx, "client-id", id)
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(ctx, desc, gatewaywire.Method, grpc.ForceCodec(gatewaywire.RawCodec{}))
	if err != nil {
		r.err = fmt.Sprintf("%s: %s", status.Code(err), status.Convert(err).Message())
		return r
	}
	for {
		var ping []byte
		if err := stream.RecvMsg(&ping); err != nil {
			if !stopping() {
				r.err = fmt.Sprintf("%s: %s", status.Code(err), status.Convert(err).Message())
			}
			return r
		}
		r.pings++
		p := gatewaywire.Pong(time.Now())
		if err := stream.SendMsg(&p); err != nil && !stopping() {
			// The receive loop reports the status.
			continue
		}
	}
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "gateway HOST:PORT (plaintext)")
	streams := flag.Int("streams", 200, "streams on the one connection")
	seconds := flag.Float64("seconds", 20, "how long to hold them")
	prefix := flag.String("id-prefix", "go", "client-id prefix (ids are PREFIX-N)")
	flag.Parse()

	start := time.Now()
	dialCtx, cancelDial := context.WithTimeout(context.Background(), 10*time.Second)
	// Default options but plaintext: BDP estimation (dynamic windows) stays on.
	conn, err := grpc.DialContext(dialCtx, *target, grpc.WithInsecure(), grpc.WithBlock())
	cancelDial()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var stopMu sync.Mutex
	stopped := false
	stopping := func() bool { stopMu.Lock(); defer stopMu.Unlock(); return stopped }

	results := make([]result, *streams)
	var wg sync.WaitGroup
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = run(ctx, conn, fmt.Sprintf("%s-%d", *prefix, i), stopping)
		}(i)
	}
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	stopMu.Lock()
	stopped = true
	stopMu.Unlock()
	cancel()
	wg.Wait()

	errors := map[string]int{}
	ended, total, min, max := 0, 0, -1, 0
	for _, r := range results {
		if r.err != "" {
			ended++
			errors[r.err]++
		}
		total += r.pings
		if min < 0 || r.pings < min {
			min = r.pings
		}
		if r.pings > max {
			max = r.pings
		}
	}
	report := map[string]interface{}{
		"streams": *streams, "seconds": *seconds, "ended_by_server": ended, "errors": errors,
		"pings_min": min, "pings_max": max, "pings_total": total,
		"wall_s": float64(time.Since(start).Milliseconds()/100) / 10,
	}
	line, _ := json.Marshal(report)
	fmt.Println(string(line))
	if ended > 0 || min <= 0 {
		os.Exit(1)
	}
}
