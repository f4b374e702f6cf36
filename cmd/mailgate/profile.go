//go:build benchprofile

package main

// A CPU-profiling endpoint for the benchmark harness only: built with
// `go build -tags benchprofile` (cmd/mailgate-bench does), never in the
// release binary. MAILGATE_PPROF_ADDR names a loopback host:port where
// net/http/pprof is served on its own mux, so the admin listener and its
// routes stay as they are.

import (
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

func init() {
	addr := os.Getenv("MAILGATE_PPROF_ADDR")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		os.Stderr.WriteString("mailgate: MAILGATE_PPROF_ADDR must be a loopback host:port; profiling off\n")
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/heap", pprof.Index)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			os.Stderr.WriteString("mailgate: pprof listener: " + err.Error() + "\n")
		}
	}()
}
