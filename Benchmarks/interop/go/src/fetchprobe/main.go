// Command fetchprobe times StatusReader/FetchOnlineUsersInLast3Mins calls, one at a time on
// one connection, as a dashboard polling status would: a light reader (one goroutine, no
// interpreter) for Benchmarks/status-fetch.py, so that on a small shared host the reader's
// own wake-ups weigh less in the measured tail than a Python client's. It connects and makes
// one untimed call; with -wait it then prints "ready" and waits for a line on its standard
// input (so that its connection is open before the caller's other clients start, and the
// timed calls start when the caller says); then it makes -calls timed calls (-interval apart,
// each with a 10 s deadline) and prints one JSON object: every call's latency in ms, in
// order, and how many answers were not -expect.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"gatewaywire"

	"google.golang.org/grpc"
)

const method = "/tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins"

// onlineUsers decodes FetchOnlineUsersInLast3MinsResponse{online_users = 1 (uint64)}.
func onlineUsers(message []byte) (uint64, error) {
	if len(message) == 0 {
		return 0, nil // the default value is not encoded
	}
	if message[0] != 0x08 {
		return 0, fmt.Errorf("unexpected field tag %#x", message[0])
	}
	var value uint64
	for i, shift := 1, uint(0); i < len(message) && shift < 64; i, shift = i+1, shift+7 {
		value |= uint64(message[i]&0x7f) << shift
		if message[i]&0x80 == 0 {
			return value, nil
		}
	}
	return 0, fmt.Errorf("truncated varint")
}

func main() {
	target := flag.String("target", "127.0.0.1:50052", "status address")
	calls := flag.Int("calls", 1000, "timed calls")
	interval := flag.Duration("interval", 0, "pause between calls")
	expect := flag.Uint64("expect", 0, "the answer every call must give")
	until := flag.Duration("for", 150*time.Second, "stop calling after this long")
	wait := flag.Bool("wait", false, `after the untimed call, print "ready" and wait for a line on stdin`)
	flag.Parse()

	dialCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(dialCtx, *target, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(gatewaywire.RawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetchprobe: dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	call := func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		request, response := []byte{}, []byte{}
		if err := conn.Invoke(ctx, method, &request, &response); err != nil {
			return 0, err
		}
		return onlineUsers(response)
	}
	if _, err := call(); err != nil { // untimed: the connection's first call
		fmt.Fprintln(os.Stderr, "fetchprobe: first call:", err)
		os.Exit(1)
	}
	if *wait {
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, "fetchprobe: no start line:", err)
			os.Exit(1)
		}
	}
	latencies := make([]float64, 0, *calls)
	wrong := 0
	stop := time.Now().Add(*until)
	for i := 0; i < *calls && time.Now().Before(stop); i++ {
		start := time.Now()
		count, err := call()
		latencies = append(latencies, float64(time.Since(start).Nanoseconds())/1e6)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fetchprobe: call:", err)
			os.Exit(1)
		}
		if count != *expect {
			wrong++
		}
		if *interval > 0 {
			time.Sleep(*interval)
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"latencies_ms": latencies, "wrong_answers": wrong})
}
