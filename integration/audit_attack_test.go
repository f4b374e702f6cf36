//go:build integration

package integration

// The attack simulation (attack_test.go) runs with the login history on;
// these helpers turn it on and check the database stays bounded as
// docs/audit.md says (figures in docs/BENCHMARKS.md, "Audit database").

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/mailgate/mailgate/audit"
)

// auditSection is the config's audit: section for a database at path.
func auditSection(path string) string {
	return fmt.Sprintf("audit: {path: %q}\n", path)
}

// attackAuditFigures opens the history after the simulation (mailgate
// stopped), checks integrity and the documented bound, and words the
// figures. The simulation's logins are alice (the one account that
// passes, so known), bob and carol (never pass here) and seven names
// that do not exist: one known account with at most max_failed_rows
// refused rows, nine unknown ones with at most max_unknown_rows each,
// plus an "(other)" address row per account, protocol and result.
func attackAuditFigures(t testing.TB, path string) string {
	t.Helper()
	r, err := audit.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var check string
	if err := r.DB().QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Errorf("audit database integrity_check: %q, %v", check, err)
	}
	st, err := r.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var accounts int
	r.DB().QueryRow(`SELECT count(DISTINCT account) FROM logins`).Scan(&accounts)
	var size int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			size += fi.Size()
		}
	}
	const results = 5 // failed, denied, guard, invalid, unavailable
	bound := int64(1*(audit.DefaultMaxFailedRows+results+1) + 9*(audit.DefaultMaxUnknownRows+results))
	if st.Rows > bound {
		t.Errorf("audit database has %d rows after the attack, more than the documented bound %d", st.Rows, bound)
	}
	if st.Events == 0 {
		t.Error("the audit database recorded no decision of the attack")
	}
	return fmt.Sprintf("audit database: %d rows for %d decisions, %d accounts, %d bytes (with WAL); bound %d rows",
		st.Rows, st.Events, accounts, size, bound)
}
