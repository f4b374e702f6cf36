//go:build integration && race

package integration

// raceEnabled: the tests run under -race, so the mailgate binary is built
// with -race too and its log is checked for data race reports.
const raceEnabled = true
