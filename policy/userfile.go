package policy

// The legacy per-user allow file, read the way the original PHP auth
// script read user-allowed.php: one `user|CC` or `user|IP` per line, with
// spaces, tabs, CR and NUL removed anywhere in the line. Entries only ever
// allow. Differences from PHP, all documented in docs/policy.md: logins
// compare case-insensitively, country codes in any case, IPv6 addresses by
// value rather than by spelling, a line with more than one "|" is refused
// (PHP would have used the second field), and "#" lines are comments.
//
// The file the old project ships is a PHP file so that a web request for
// it prints nothing: a "<?php" line, "##" comments, the entries inside a
// "/*" ... "*/ " block, then "?>". In a file whose first line starts with
// "<?php", the "/*", "*/" and "?>" lines are that wrapper and are skipped
// silently (PHP's script skipped them too: they have no "|").

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxPolicyFile caps what we read from a policy file: a million legacy
// lines are ~40 MiB; anything bigger is not a policy file, and reading it
// would hold the reload (and memory) hostage.
const maxPolicyFile = 64 << 20

// bom is the UTF-8 byte order mark.
const bom = "\xef\xbb\xbf"

// UserEntry is one valid line of the user file.
type UserEntry struct {
	// User is the login as written (spaces etc. stripped).
	User string
	// Target is the country code (upper case) or IP address as written.
	Target string
	// Line is the 1-based line number.
	Line int
	t    target
}

// LineWarning is a line that was skipped, with why.
type LineWarning struct {
	Line int
	Msg  string
}

// UserFile is a parsed user file.
type UserFile struct {
	Path     string
	Entries  []UserEntry
	Warnings []LineWarning
	// Printed are the line numbers of entries that PHP prints to anyone
	// who requests the file: in a PHP-wrapped file, those after its "?>"
	// (as an older mailgate allow wrote them).
	Printed []int
}

// stripLegacy removes what the PHP script removed: " ", "\t", "\r", "\0".
func stripLegacy(line []byte) []byte {
	if !bytes.ContainsAny(line, " \t\r\x00") {
		return line
	}
	out := make([]byte, 0, len(line))
	for _, c := range line {
		switch c {
		case ' ', '\t', '\r', 0:
		default:
			out = append(out, c)
		}
	}
	return out
}

// ParseUserFile parses user-file content. It never fails: bad lines become
// warnings naming their line number, as the original script skipped them.
// Blank lines, "#" comments and a first line starting with "<?php" (the
// guard that stops a web server from serving the file) are skipped
// silently.
func ParseUserFile(data []byte) (entries []UserEntry, warnings []LineWarning) {
	// A UTF-8 byte order mark, as some Windows editors write, is not part
	// of the first user name or guard.
	data = bytes.TrimPrefix(data, []byte(bom))
	wrapped := phpWrapped(data)
	n := 0
	for len(data) > 0 {
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		n++
		e, skip, err := parseUserLine(raw, n, wrapped)
		if err != nil {
			warnings = append(warnings, LineWarning{Line: n, Msg: err.Error()})
			continue
		}
		if !skip {
			entries = append(entries, e)
		}
	}
	return entries, warnings
}

// phpWrapped reports whether data (without a byte order mark) starts with
// a "<?php" line, the PHP wrapper of the old project's file.
func phpWrapped(data []byte) bool {
	first, _, _ := bytes.Cut(bytes.TrimPrefix(data, []byte(bom)), []byte("\n"))
	return phpOpen(first)
}

// phpOpen reports whether a raw line opens PHP: "<?php" followed by
// whitespace or the end of the line, as PHP reads its open tag. It looks
// at the raw line, before stripLegacy, so that an entry whose user begins
// with "<?php" ("<?phpx|RU", which FormatUserFile may write on line 1) is
// read as the entry it is.
func phpOpen(raw []byte) bool {
	line := bytes.TrimLeft(raw, " \t\r\x00")
	rest, ok := bytes.CutPrefix(line, []byte("<?php"))
	return ok && (len(rest) == 0 || bytes.IndexByte([]byte(" \t\r"), rest[0]) >= 0)
}

// phpPrinted returns the line numbers of the entries PHP would print:
// in a file whose first line starts with "<?php", those after the line
// that leaves PHP ("?>" alone, or the first line itself when it closes
// PHP without exit or die).
func phpPrinted(data []byte, entries []UserEntry) []int {
	if !phpWrapped(data) {
		return nil
	}
	first, rest, _ := bytes.Cut(bytes.TrimPrefix(data, []byte(bom)), []byte("\n"))
	l := strings.ToLower(string(stripLegacy(first)))
	closedAt := 0 // line after which PHP prints
	if strings.Contains(l, "?>") {
		if strings.Contains(l, "exit") || strings.Contains(l, "die") {
			return nil
		}
		closedAt = 1
	} else {
		for n := 2; len(rest) > 0; n++ {
			var line []byte
			line, rest, _ = bytes.Cut(rest, []byte("\n"))
			if string(stripLegacy(line)) == "?>" {
				closedAt = n
				break
			}
		}
	}
	if closedAt == 0 {
		return nil
	}
	var out []int
	for _, e := range entries {
		if e.Line > closedAt {
			out = append(out, e.Line)
		}
	}
	return out
}

// isWrapperLine reports whether a stripped line is one of the PHP
// wrapper's own lines after the first: a comment block's "/*" or "*/", or
// the closing "?>".
func isWrapperLine(line []byte) bool {
	switch string(line) {
	case "/*", "*/", "?>":
		return true
	}
	return false
}

// parseUserLine reads one line; skip is true for blank, comment, guard and
// (in a PHP-wrapped file) wrapper lines.
func parseUserLine(raw []byte, n int, wrapped bool) (e UserEntry, skip bool, err error) {
	line := stripLegacy(raw)
	switch {
	case len(line) == 0, line[0] == '#':
		return e, true, nil
	case n == 1 && phpOpen(raw):
		return e, true, nil
	case wrapped && n > 1 && isWrapperLine(line):
		return e, true, nil
	}
	user, rest, ok := bytes.Cut(line, []byte("|"))
	switch {
	case !ok:
		return e, false, errors.New(`no "|" between user and country or IP`)
	case bytes.IndexByte(rest, '|') >= 0:
		return e, false, errors.New(`more than one "|"`)
	case len(user) == 0:
		return e, false, errors.New("empty user")
	case len(rest) == 0:
		return e, false, errors.New("empty country or IP")
	}
	if err := checkLogin(string(user)); err != nil {
		return e, false, err
	}
	t, err := parseTarget(string(rest))
	if err != nil || t.kind == targetAny || (t.kind == targetNetwork && !t.net.IsSingleIP()) ||
		(t.kind == targetCode && len(t.code) != 2) {
		return e, false, fmt.Errorf("%q is neither a two-letter country code nor an IP address", rest)
	}
	return UserEntry{User: string(user), Target: t.String(), Line: n, t: t}, false, nil
}

// FormatUserFile writes entries in the legacy format, one per line; what
// ParseUserFile reads back is the same entries (line numbers aside).
func FormatUserFile(entries []UserEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e.User)
		b.WriteByte('|')
		b.WriteString(e.Target)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// readUserFile reads and parses the user file at path.
func readUserFile(path string) (*UserFile, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	uf := &UserFile{Path: path}
	uf.Entries, uf.Warnings = ParseUserFile(data)
	uf.Printed = phpPrinted(data, uf.Entries)
	return uf, nil
}

// readCapped reads a whole policy file, refusing one over maxPolicyFile.
func readCapped(path string) ([]byte, error) {
	// Refuse anything but a regular file before opening it: opening a
	// FIFO blocks until a writer comes, and a reload must never hang.
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("policy: %s: not a regular file (%s): %w", path, fi.Mode().Type(), ErrInvalid)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicyFile+1))
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	if len(data) > maxPolicyFile {
		return nil, fmt.Errorf("policy: %s: larger than %d MiB: %w", path, maxPolicyFile>>20, ErrInvalid)
	}
	return data, nil
}

// userKey is the map key of an entry's user.
func (e *UserEntry) userKey(defDomain string) string {
	return normLogin(strings.TrimSpace(e.User), defDomain)
}
