package guard_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// The three call points as the proxy uses them, for one client that
// guesses wrong until it is banned.
func Example() {
	clock := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	g, err := guard.New(guard.Defaults(), guard.Options{Now: func() time.Time { return clock }})
	if err != nil {
		panic(err)
	}
	client := netip.MustParseAddr("198.51.100.7")
	for i := range 12 {
		// 1. At accept, before TLS.
		conn, err := g.Accept(client)
		if err != nil {
			fmt.Println("refused at accept:", err)
			return
		}
		// 2. Before backend contact: one handle per attempt; wait
		// v.Delay (respecting the connection's context), then refuse
		// or try the backend.
		login, password := fmt.Sprintf("user%d@example.org", i), "wrong"
		a := g.Attempt(login, client, password)
		v := a.Begin(context.Background())
		if !v.Allow {
			a.Finish(guard.Refused, "")
		} else {
			release, err := g.BackendSlot(context.Background())
			if err != nil {
				fmt.Println("temporary failure:", err)
				a.Finish(guard.Abandoned, "")
				conn.Close()
				continue
			}
			// ... the backend says the password is wrong ...
			release()
			// 3. After the attempt: record it and end it in one call.
			for _, e := range a.Finish(guard.WrongPassword, "") {
				fmt.Println(e.Kind, e.Prefix, e.Duration)
			}
		}
		fmt.Printf("attempt %d: tarpit %v\n", i+1, v.Delay)
		conn.Close()
	}
	// Output:
	// attempt 1: tarpit 0s
	// attempt 2: tarpit 0s
	// attempt 3: tarpit 0s
	// attempt 4: tarpit 1s
	// attempt 5: tarpit 2s
	// attempt 6: tarpit 4s
	// attempt 7: tarpit 8s
	// attempt 8: tarpit 15s
	// attempt 9: tarpit 15s
	// BANNED 198.51.100.7/32 15m0s
	// attempt 10: tarpit 15s
	// refused at accept: guard: source banned: 198.51.100.7/32 banned until 2026-11-26T12:15:00Z: 10 distinct failures in 15m0s
}
