// Command gatewayscale holds many tenten.interview.Gateway/Connect streams over many grpc-go
// connections, answers every Ping with a Pong, and measures what the clients see: the
// interval between consecutive pings of each stream over a steady window after the ramp.
// It is the load generator of Benchmarks/gateway-scale.sh, the same for every server measured.
//
// Usage:
//
//	gatewayscale -target HOST:PORT -clients 50000 -connections 500 \
//	  [-sources 127.0.0.1,127.0.0.2] [-ramp 5000] [-settle 10] [-window 60] [-id-prefix s] \
//	  [-window-gc=false] [-window-memory-mb 4096]
//
// Streams are spread round-robin over the connections, connections round-robin over the
// source addresses (past ~28,000 connections one source address runs out of ephemeral
// ports). Windows are fixed (64 KiB), as a phone's client would set them, which also turns
// off grpc-go's BDP pings: the generator costs the same against every server.
//
// Go's garbage collector is off during the window (-window-gc=false, the default), with
// -window-memory-mb as the heap's limit: with 50,000 streams the generator holds ~500 MB of
// goroutine stacks, which each collection scans; on one core a cycle took ~0.8 s of wall
// clock, during which its goroutines ran late and the pings they read looked late by as much
// (gctrace; docs/benchmarks.md). It collects once before the window opens, and allocates
// ~13 MB a second at 50,000 streams, so a 60 s window stays far below the limit.
//
// Prints one JSON line: clients, connected (streams that got a ping in the window),
// ended_by_server, errors ("CODE: message" → count), interval_ms p50/p99/p999/max over the
// window, pings in the window, and the generator's own CPU (user+system seconds over the
// window, and as a fraction of one core) and its garbage collections in the window. Writes
// "window open" and "window closed" to stderr as the window opens and closes. Exits 0 when
// every stream stayed up.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gatewaywire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// stream is one simulated client. Intervals are kept per stream (no shared state on the hot
// path) as milliseconds, and only while the window is open.
type stream struct {
	intervals []uint16
	pings     int
	err       string
}

// phase: 0 ramp/settle, 1 window open, 2 stopping.
var phase atomic.Int32

func (s *stream) run(ctx context.Context, conn *grpc.ClientConn, id string) {
	ctx = metadata.AppendToOutgoingContext(ctx, "client-id", id)
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	st, err := conn.NewStream(ctx, desc, gatewaywire.Method, grpc.ForceCodec(gatewaywire.RawCodec{}))
	if err != nil {
		s.err = fmt.Sprintf("%s: %s", status.Code(err), status.Convert(err).Message())
		return
	}
	var last time.Time
	var ping []byte
	for {
		if err := st.RecvMsg(&ping); err != nil {
			if phase.Load() < 2 {
				s.err = fmt.Sprintf("%s: %s", status.Code(err), status.Convert(err).Message())
			}
			return
		}
		now := time.Now()
		if phase.Load() == 1 {
			s.pings++
			if !last.IsZero() {
				ms := now.Sub(last).Milliseconds()
				if ms > 65535 {
					ms = 65535
				}
				s.intervals = append(s.intervals, uint16(ms))
			}
		}
		last = now
		p := gatewaywire.Pong(now)
		_ = st.SendMsg(&p) // a failed send shows as the receive's error
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func percentile(sorted []uint16, p float64) int {
	if len(sorted) == 0 {
		return -1
	}
	i := int(p * float64(len(sorted)-1))
	return int(sorted[i])
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "gateway HOST:PORT (plaintext)")
	clients := flag.Int("clients", 1000, "streams in all")
	connections := flag.Int("connections", 10, "HTTP/2 connections to spread them over")
	sources := flag.String("sources", "", "comma-separated local addresses to connect from")
	ramp := flag.Int("ramp", 5000, "streams opened per second")
	settle := flag.Float64("settle", 10, "seconds between the last stream opened and the window")
	window := flag.Float64("window", 60, "seconds of steady state measured")
	prefix := flag.String("id-prefix", "scale", "client-id prefix (ids are PREFIX-N)")
	windowGC := flag.Bool("window-gc", false, "let Go's garbage collector run during the window")
	windowMemory := flag.Int64("window-memory-mb", 4096, "heap limit while the collector is off")
	flag.Parse()
	if *connections < 1 || *connections > *clients {
		fmt.Fprintln(os.Stderr, "need 1 <= connections <= clients")
		os.Exit(2)
	}
	var addrs []string
	if *sources != "" {
		addrs = strings.Split(*sources, ",")
	}

	start := time.Now()
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		opts := []grpc.DialOption{
			grpc.WithInsecure(),
			grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535),
			grpc.WithReadBufferSize(4096), grpc.WithWriteBufferSize(4096),
		}
		if len(addrs) > 0 {
			local := &net.TCPAddr{IP: net.ParseIP(addrs[i%len(addrs)])}
			opts = append(opts, grpc.WithContextDialer(
				func(ctx context.Context, addr string) (net.Conn, error) {
					d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
					return d.DialContext(ctx, "tcp", addr)
				}))
		}
		conn, err := grpc.Dial(*target, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(2)
		}
		conns[i] = conn
	}

	ctx, cancel := context.WithCancel(context.Background())
	streams := make([]stream, *clients)
	var wg sync.WaitGroup
	pace := time.Second / time.Duration(*ramp)
	next := time.Now()
	for i := range streams {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			streams[i].run(ctx, conns[i%len(conns)], fmt.Sprintf("%s-%d", *prefix, i))
		}(i)
		next = next.Add(pace)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	rampS := time.Since(start).Seconds()
	time.Sleep(time.Duration(*settle * float64(time.Second)))

	gcs := func() uint32 { var m runtime.MemStats; runtime.ReadMemStats(&m); return m.NumGC }
	if !*windowGC {
		runtime.GC()
		debug.SetMemoryLimit(*windowMemory << 20)
		debug.SetGCPercent(-1)
	}
	gc0 := gcs()
	cpu0, t0 := cpuSeconds(), time.Now()
	phase.Store(1)
	fmt.Fprintln(os.Stderr, "window open") // markers for a script that samples the server
	time.Sleep(time.Duration(*window * float64(time.Second)))
	phase.Store(2)
	cpu1, elapsed := cpuSeconds(), time.Since(t0).Seconds()
	gcInWindow := gcs() - gc0
	fmt.Fprintln(os.Stderr, "window closed")
	debug.SetGCPercent(100)
	cancel()
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}

	errors := map[string]int{}
	ended, connected, pings := 0, 0, 0
	var all []uint16
	for i := range streams {
		s := &streams[i]
		if s.err != "" {
			ended++
			errors[s.err]++
		}
		if s.pings > 0 {
			connected++
		}
		pings += s.pings
		all = append(all, s.intervals...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	report := map[string]interface{}{
		"clients": *clients, "connections": *connections, "connected": connected,
		"ended_by_server": ended, "errors": errors, "ramp_s": round(rampS),
		"window_s": round(elapsed), "pings": pings,
		"interval_ms": map[string]int{
			"p50": percentile(all, 0.5), "p99": percentile(all, 0.99),
			"p999": percentile(all, 0.999), "max": percentile(all, 1),
		},
		"generator_cpu_s": round(cpu1 - cpu0), "generator_cores": round((cpu1 - cpu0) / elapsed),
		"generator_gcs": gcInWindow,
	}
	line, _ := json.Marshal(report)
	fmt.Println(string(line))
	if ended > 0 || connected < *clients {
		os.Exit(1)
	}
}

func round(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }
