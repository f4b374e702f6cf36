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
	"runtime"
	"runtime/debug"
	"sync"
)

// version is the release, set at build time with -ldflags
// "-X main.version=1.0.0"; left at "dev", currentBuild takes the module
// version Go recorded, if any.
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
  mailgate admin passwd USER [-role R]   create a web console account or set its password
  mailgate health [-config FILE]         exit 0 when the admin listener says ready (HEALTHCHECK)
  mailgate version                       print the version and commit

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
	case "admin":
		return runAdmin(rest, stdin, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, currentBuild())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// buildInfo is what `mailgate version` and mailgate_build_info say about
// the running binary.
type buildInfo struct {
	// Version is -X main.version when set, else the main module's version
	// Go recorded (a tag for `go install ...@v1.2.3`, a pseudo-version
	// for a build in a git clone), else "dev".
	Version   string
	Revision  string // vcs.revision: the commit, "" when none was recorded
	Time      string // vcs.time: the commit's time (RFC 3339), or ""
	Modified  bool   // vcs.modified: built with uncommitted changes
	GoVersion string
}

// currentBuild reads the running binary's build info once.
var currentBuild = sync.OnceValue(func() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	return readBuild(version, bi, ok)
})

// readBuild combines the -X version with the build info Go embeds (go
// build stamps the vcs.* settings in a git clone unless -buildvcs=false).
func readBuild(ldVersion string, bi *debug.BuildInfo, ok bool) buildInfo {
	b := buildInfo{Version: ldVersion, GoVersion: runtime.Version()}
	if ok {
		b.GoVersion = bi.GoVersion
		if (b.Version == "" || b.Version == "dev") && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				b.Revision = kv.Value
			case "vcs.time":
				b.Time = kv.Value
			case "vcs.modified":
				b.Modified = kv.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	return b
}

// String is the line `mailgate version` prints, so a bug report says
// exactly what ran:
//
//	mailgate 1.0.0 (0123456789ab, 2026-12-06T14:36:19Z) go1.26.8
//	mailgate dev (0123456789ab+dirty, 2026-12-06T14:36:19Z) go1.26.8
//	mailgate 1.0.0 (commit unknown) go1.26.8
func (b buildInfo) String() string {
	commit := "commit unknown"
	if b.Revision != "" {
		commit = b.Revision
		if len(commit) > 12 {
			commit = commit[:12]
		}
		if b.Modified {
			commit += "+dirty"
		}
		if b.Time != "" {
			commit += ", " + b.Time
		}
	}
	return fmt.Sprintf("mailgate %s (%s) %s", b.Version, commit, b.GoVersion)
}
