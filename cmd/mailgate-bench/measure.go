package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSamples bounds the latencies kept per run (memory); past it the
// run still counts logins but stops recording their latencies.
const maxSamples = 2_000_000

// loginResult is one logins run against one target.
type loginResult struct {
	Proto       string
	Conc        int
	Elapsed     time.Duration
	OK          int
	Errors      map[string]int
	P50, P90    time.Duration
	P99         time.Duration
	FirstErr    string
	CPUPerLogin time.Duration // of the watched process tree, if any
	BackendCPU  time.Duration // per login, of the backend's process tree, if watched
	ClientCPU   time.Duration // per login, of this process: the load generator
	AuthCPU     time.Duration // per login, of nginx's auth_http endpoint (suite, nginx only)
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Rate is successful logins per second.
func (r loginResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

func (r loginResult) errString() string {
	if len(r.Errors) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(mapKeys(r.Errors)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Errors[k]))
	}
	return strings.Join(parts, " ")
}

func mapKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// runLogins drives conc workers doing whole sessions (once) for dur, or
// until max sessions were started (0: no count limit). cpu, if not nil,
// is read before and after to give CPU time per successful login.
func runLogins(ctx context.Context, conc int, dur time.Duration, max int64, once func(context.Context) error, cpu, backendCPU func() time.Duration) loginResult {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	now := func() (time.Time, bool) { return time.Now(), true }
	return runWorkers(ctx, conc, max, now, once, cpu, backendCPU)
}

// runPaced offers sessions at a fixed rate for dur (open loop) to at most
// conc workers at a time. Each session's latency counts from the moment
// it was due, not from when a worker was free: a server that falls
// behind shows it in the latencies (no coordinated omission). Sessions
// still waiting for a worker when dur ends are counted as "unserved".
func runPaced(ctx context.Context, conc int, rate float64, dur time.Duration, once func(context.Context) error, cpu, backendCPU func() time.Duration) loginResult {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	n := int(rate*dur.Seconds()) + 1
	due := make(chan time.Time, n)
	begin := time.Now()
	go func() {
		defer close(due)
		for i := range n {
			t := begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(t)):
			}
			due <- t
		}
	}()
	next := func() (time.Time, bool) {
		select {
		case <-ctx.Done():
			return time.Time{}, false
		case t, ok := <-due:
			return t, ok
		}
	}
	res := runWorkers(ctx, conc, 0, next, once, cpu, backendCPU)
	if k := len(due); k > 0 {
		res.Errors["unserved"] += k
	}
	return res
}

// runWorkers runs conc workers, each taking its next session's start
// time from next until next says stop, ctx ends, or max sessions began.
func runWorkers(ctx context.Context, conc int, max int64, next func() (time.Time, bool), once func(context.Context) error, cpu, backendCPU func() time.Duration) loginResult {
	var (
		started atomic.Int64
		mu      sync.Mutex
		lat     []time.Duration
		errs    = map[string]int{}
		first   string
		wg      sync.WaitGroup
	)
	var cpu0, bcpu0 time.Duration
	if cpu != nil {
		cpu0 = cpu()
	}
	if backendCPU != nil {
		bcpu0 = backendCPU()
	}
	self0 := selfCPU()
	begin := time.Now()
	for w := range conc {
		wg.Add(1)
		wctx := context.WithValue(context.WithoutCancel(ctx), workerKey{}, w+1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			local := map[string]int{}
			var firstLocal string
			for ctx.Err() == nil {
				if max > 0 && started.Add(1) > max {
					break
				}
				t0, ok := next()
				if !ok {
					break
				}
				// A session already begun runs to its end on its own
				// step deadlines, so the run's end does not count as
				// an error of the server.
				err := once(wctx)
				if err != nil {
					local[errKind(err)]++
					if firstLocal == "" {
						firstLocal = err.Error()
					}
					continue
				}
				if len(mine) < maxSamples/conc+1 {
					mine = append(mine, time.Since(t0))
				} else {
					local["ok-unsampled"]++
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			for k, v := range local {
				errs[k] += v
			}
			if first == "" {
				first = firstLocal
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := loginResult{Conc: conc, Elapsed: time.Since(begin), Errors: errs, FirstErr: first}
	res.OK = len(lat) + errs["ok-unsampled"]
	delete(errs, "ok-unsampled")
	slices.Sort(lat)
	res.P50, res.P90, res.P99 = quantile(lat, 0.50), quantile(lat, 0.90), quantile(lat, 0.99)
	if cpu != nil && res.OK > 0 {
		res.CPUPerLogin = (cpu() - cpu0) / time.Duration(res.OK)
	}
	if backendCPU != nil && res.OK > 0 {
		res.BackendCPU = (backendCPU() - bcpu0) / time.Duration(res.OK)
	}
	if res.OK > 0 {
		res.ClientCPU = (selfCPU() - self0) / time.Duration(res.OK)
	}
	return res
}

// workerKey carries a worker's number in the context of its sessions.
type workerKey struct{}

// workerID is the number of the worker running ctx's session (0 outside
// runWorkers), so per-client state such as a TLS session stays with one
// worker.
func workerID(ctx context.Context) int {
	n, _ := ctx.Value(workerKey{}).(int)
	return n
}

// quantile of sorted d (nearest rank).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// xferResult is one APPEND + FETCH of a large message.
type xferResult struct {
	Size          int
	Append, Fetch time.Duration
}

func mbps(size int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(size) / 1e6 / d.Seconds()
}

// runTransfer logs in, APPENDs msg to INBOX, FETCHes it back, checks
// every byte, then deletes it, so repeated runs keep the mailbox small.
func runTransfer(ctx context.Context, t target, msg []byte) (xferResult, error) {
	res := xferResult{Size: len(msg)}
	c, err := dial(ctx, t)
	if err != nil {
		return res, err
	}
	defer c.Close()
	return c.transfer(t, msg)
}

// transfer is runTransfer on a connected session.
func (c *conn) transfer(t target, msg []byte) (xferResult, error) {
	res := xferResult{Size: len(msg)}
	// A 20 MB transfer at a few MB/s must not hit the per-step deadline.
	c.deadline(t.step + time.Duration(len(msg)/(1<<20))*time.Second)
	if err := c.imapLogin(t); err != nil {
		return res, err
	}
	// Start clean: earlier aborted runs may have left messages.
	if _, _, err := c.imapCmd("SELECT INBOX"); err != nil {
		return res, err
	}
	if _, _, err := c.imapCmd(`STORE 1:* +FLAGS.SILENT (\Deleted)`); err != nil && errKind(err) != kindRejected {
		return res, err
	}
	if _, _, err := c.imapCmd("EXPUNGE"); err != nil {
		return res, err
	}

	t0 := time.Now()
	c.tag++
	tag := fmt.Sprintf("b%d", c.tag)
	if err := c.send(fmt.Sprintf("%s APPEND INBOX {%d}\r\n", tag, len(msg))); err != nil {
		return res, err
	}
	l, err := c.line()
	if err != nil {
		return res, err
	}
	if !strings.HasPrefix(l, "+") {
		return res, &stepError{kindRejected, fmt.Errorf("APPEND: %.200s", l)}
	}
	if _, err := c.nc.Write(msg); err != nil {
		return res, err
	}
	if err := c.send("\r\n"); err != nil {
		return res, err
	}
	if _, _, err := c.imapWait(tag); err != nil {
		return res, err
	}
	res.Append = time.Since(t0)

	if _, _, err := c.imapCmd("NOOP"); err != nil {
		return res, err
	}
	t0 = time.Now()
	c.tag++
	tag = fmt.Sprintf("b%d", c.tag)
	if err := c.send(tag + " FETCH * BODY.PEEK[]\r\n"); err != nil {
		return res, err
	}
	var sum [32]byte
	got := false
	for range 100 {
		l, err := c.line()
		if err != nil {
			return res, err
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				return res, &stepError{kindRejected, fmt.Errorf("FETCH: %.200s", l)}
			}
			break
		}
		if n, ok := parseLiteral(l); ok && strings.Contains(l, "FETCH") {
			if n != int64(len(msg)) {
				return res, &stepError{kindProtocol, fmt.Errorf("FETCH returned %d bytes, appended %d", n, len(msg))}
			}
			h := sha256.New()
			if _, err := io.CopyN(h, c.r, n); err != nil {
				return res, err
			}
			copy(sum[:], h.Sum(nil))
			got = true
		}
	}
	res.Fetch = time.Since(t0)
	if !got {
		return res, &stepError{kindProtocol, errors.New("FETCH returned no body")}
	}
	if want := sha256.Sum256(msg); !bytes.Equal(sum[:], want[:]) {
		return res, &stepError{kindProtocol, errors.New("FETCH returned different bytes than were appended")}
	}
	if _, _, err := c.imapCmd(`STORE * +FLAGS.SILENT (\Deleted)`); err != nil {
		return res, err
	}
	if _, _, err := c.imapCmd("EXPUNGE"); err != nil {
		return res, err
	}
	_, _, _ = c.imapCmd("LOGOUT")
	return res, nil
}

// idleSessions opens k authenticated IMAP sessions in IDLE, opening at
// most conc at a time, and returns them; the caller ends them with
// endIdle. On error the sessions opened so far are returned too.
func idleSessions(ctx context.Context, t target, k, conc int) ([]*conn, map[string]int) {
	var (
		mu    sync.Mutex
		out   = make([]*conn, 0, k)
		errs  = map[string]int{}
		next  atomic.Int64
		wg    sync.WaitGroup
		first = true
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && next.Add(1) <= int64(k) {
				c, err := openIdle(ctx, t)
				mu.Lock()
				if err != nil {
					errs[errKind(err)]++
					if first {
						warnf("idle: %v", err)
						first = false
					}
				} else {
					out = append(out, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errs
}

func openIdle(ctx context.Context, t target) (*conn, error) {
	c, err := dial(ctx, t)
	if err != nil {
		return nil, err
	}
	c.deadline(t.step)
	if err := c.imapLogin(t); err != nil {
		c.Close()
		return nil, err
	}
	if _, _, err := c.imapCmd("SELECT INBOX"); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.send("idle IDLE\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	l, err := c.line()
	if err != nil || !strings.HasPrefix(l, "+") {
		c.Close()
		if err == nil {
			err = &stepError{kindProtocol, fmt.Errorf("IDLE: %.200s", l)}
		}
		return nil, err
	}
	_ = c.nc.SetDeadline(time.Time{})
	return c, nil
}

// endIdle ends IDLE and logs out on every session, conc at a time, and
// counts the sessions that did not answer cleanly (they were cut while
// idle).
func endIdle(cs []*conn, step time.Duration, conc int) map[string]int {
	errs := map[string]int{}
	var mu sync.Mutex
	ch := make(chan *conn)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				c.deadline(step)
				err := c.send("DONE\r\n")
				if err == nil {
					_, _, err = c.imapWait("idle")
				}
				if err == nil {
					_, _, err = c.imapCmd("LOGOUT")
				}
				c.Close()
				if err != nil {
					mu.Lock()
					errs[errKind(err)]++
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range cs {
		ch <- c
	}
	close(ch)
	wg.Wait()
	return errs
}
