// Command mailgate is a mail edge proxy: it lets an IMAP, POP3 or SMTP
// submission login through to the backend mail server only when that user
// may log in from the client's country or network.
//
// main stays small: it dispatches to one function per subcommand, each of
// which returns the process exit status.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `mailgate: a mail edge proxy that admits logins by country and network

Usage:
  mailgate serve [-config FILE]          run the proxy (default config ` + defaultConfigPath + `)
  mailgate demo                          run a self-contained demo on loopback
  mailgate check-config [-config FILE]   validate config, policy and databases
  mailgate lookup [-config FILE] IP...   show where addresses are placed
  mailgate geo update [-config FILE]     download, verify and install a fresh geo database
  mailgate policy test|check ...         try the policy, or lint its files
  mailgate allow USER CC|IP|CIDR ...     let a user in from a place
  mailgate revoke USER CC|IP|CIDR ...    take that back
  mailgate bans list|add|remove ...      show, add or lift brute-force bans
  mailgate lockouts                      list logins locked by the guard
  mailgate unlock USER                   unlock a login locked by the guard
  mailgate audit USER | --top WHAT       an account's login history, or what is refused most
  mailgate health [-config FILE]         exit 0 when the admin listener says ready (HEALTHCHECK)
  mailgate version                       print the version

Run "mailgate COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(rest, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "check-config":
		return runCheckConfig(rest, stdout, stderr)
	case "lookup":
		return runLookup(rest, stdin, stdout, stderr)
	case "geo":
		return runGeo(rest, stdout, stderr)
	case "policy":
		return runPolicy(rest, stdout, stderr)
	case "allow":
		return runAllow(rest, stdout, stderr)
	case "revoke":
		return runRevoke(rest, stdout, stderr)
	case "bans":
		return runBans(rest, stdout, stderr)
	case "lockouts":
		return runLockouts(rest, stdout, stderr)
	case "unlock":
		return runUnlock(rest, stdout, stderr)
	case "audit":
		return runAudit(rest, stdout, stderr)
	case "health":
		return runHealth(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// versionString names the release and, for builds from a checkout, the
// commit, so a bug report says exactly what ran.
func versionString() string {
	s := "mailgate " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				if kv.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			s += " (" + rev + dirty + ")"
		}
		s += " " + bi.GoVersion
	}
	return s
}
