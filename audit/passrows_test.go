package audit

import (
	"fmt"
	"testing"
	"time"
)

// TestPassRowsBounded: an account holder controls the IMAP ID client
// name (and the mechanism) of each of its own logins, and a pass row
// was always written, one per new (address, client ID, mechanism): one
// account's scripted logins, each with a fresh client ID, added a row
// each, without bound. An account's pass rows of one day are capped like
// its refusals; beyond the cap they fold into its "(other)" address row,
// and every login is still counted.
func TestPassRowsBounded(t *testing.T) {
	const limit, logins = 20, 300
	s := open(t, Config{MaxFailedRows: limit, BatchRows: 50, BatchInterval: time.Millisecond}, Options{})
	now := time.Now()
	for i := range logins {
		e := ev("mallory@example.org", "192.0.2.7", ResultPass, now)
		e.ClientID = fmt.Sprintf("client-%d", i)
		s.Record(e)
	}
	s.Flush()
	st := stats(t, s)
	if st.Rows > limit+1 {
		t.Errorf("%d logins with distinct client IDs wrote %d rows, want at most %d", logins, st.Rows, limit+1)
	}
	if st.Events != logins {
		t.Errorf("%d logins counted, want %d", st.Events, logins)
	}
	rows, err := s.History(t.Context(), Query{Account: "mallory@example.org", Since: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	folded := false
	for _, r := range rows {
		if r.Addr == Other && r.Result == ResultPass {
			folded = true
		}
	}
	if !folded {
		t.Errorf("no folded (other) pass row among %d rows", len(rows))
	}
}
