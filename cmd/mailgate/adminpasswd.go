package main

// `mailgate admin passwd USER [-role viewer|admin]`: create a console
// account or change its password (and role) in admin.console.users_file
// (docs/console.md). The password is read from the terminal, twice, or
// as one line from standard input; never from the command line, where
// other users and the shell history would see it.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/mailgate/mailgate/console"
)

// minConsolePassword: shorter console passwords are refused.
const minConsolePassword = 10

const adminUsage = `Usage:
  mailgate admin passwd [-config FILE] [-file USERS_FILE] [-role viewer|admin] [-cost N] USER

Creates the console account USER or sets its password, in
admin.console.users_file (or -file). The password is read from the
terminal (asked twice) or as one line from standard input. -role sets the
role; a new account is a viewer unless told otherwise, an existing one
keeps its role. -cost is bcrypt's cost, 4 to 17 (default 12: about a
quarter second per sign-in; each step doubles it).
`

func runAdmin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "passwd" {
		fmt.Fprint(stderr, adminUsage)
		return exitError
	}
	fs, path := commandFlags("admin passwd", stderr)
	file := fs.String("file", "", "users file (default: admin.console.users_file of the config)")
	role := fs.String("role", "", "viewer or admin (default: viewer for a new account, unchanged otherwise)")
	cost := fs.Int("cost", console.BcryptCost, "bcrypt cost, 4 to 17")
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage) }
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return exitError
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitError
	}
	user := pos[0]
	if !console.ValidUserName(user) {
		fmt.Fprintf(stderr, "mailgate admin passwd: user name %s: want 1 to %d letters, digits, '.', '_', '@' or '-'\n", quoteInput(user), console.MaxUserLen)
		return exitError
	}
	if *role != "" && *role != console.RoleViewer && *role != console.RoleAdmin {
		fmt.Fprintf(stderr, "mailgate admin passwd: -role %s: want viewer or admin\n", quoteInput(*role))
		return exitError
	}
	if *cost < bcrypt.MinCost || *cost > console.MaxBcryptCost {
		fmt.Fprintf(stderr, "mailgate admin passwd: -cost %d: want %d to %d\n", *cost, bcrypt.MinCost, console.MaxBcryptCost)
		return exitError
	}
	if *file == "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			printErrors(stderr, "mailgate: "+*path, err)
			return exitError
		}
		if *file = cfg.Admin.Console.UsersFile; *file == "" {
			fmt.Fprintf(stderr, "mailgate admin passwd: %s sets no admin.console.users_file; set it or pass -file\n", *path)
			return exitError
		}
	}
	pw, err := readNewPassword(stdin, stderr, user)
	if err != nil {
		fmt.Fprintln(stderr, "mailgate admin passwd:", err)
		return exitError
	}
	hash, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		fmt.Fprintln(stderr, "mailgate admin passwd:", err)
		return exitError
	}
	created, newRole, err := setConsoleUser(*file, user, *role, string(hash))
	if err != nil {
		fmt.Fprintln(stderr, "mailgate admin passwd:", err)
		return exitError
	}
	what := "password changed"
	if created {
		what = "account created"
	}
	fmt.Fprintf(stdout, "%s: %s (%s) in %s\n", user, what, newRole, *file)
	return exitOK
}

// readNewPassword reads the new password: from a terminal without echo,
// twice; otherwise one line of stdin.
func readNewPassword(stdin io.Reader, stderr io.Writer, user string) ([]byte, error) {
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(stderr, "New console password for %s: ", user)
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(a, b) {
			return nil, errors.New("the two passwords differ; nothing changed")
		}
		pw = a
	} else {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return nil, errors.New("no password on standard input")
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	switch {
	case len(pw) < minConsolePassword:
		return nil, fmt.Errorf("the password must be at least %d characters", minConsolePassword)
	case len(pw) > console.MaxPasswordLen:
		return nil, fmt.Errorf("the password must be at most %d bytes (bcrypt's limit)", console.MaxPasswordLen)
	case bytes.ContainsAny(pw, "\x00\r\n"):
		return nil, errors.New("the password must not contain NUL, CR or LF")
	}
	return pw, nil
}

// setConsoleUser writes user's line into the users file, replacing an
// existing one (keeping its role unless role is set) or adding one, and
// keeps every other line as it was. The file is replaced atomically,
// with the old file's mode and owner (mailgate must still read it); a
// new file is made with mode 0600.
func setConsoleUser(path, user, role, hash string) (created bool, newRole string, err error) {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, "", err
	}
	if len(old) > 0 {
		// Refuse to rewrite a file mailgate could not read: fix it first.
		if _, err := console.ParseUsers(old); err != nil {
			return false, "", fmt.Errorf("%s: %w", path, err)
		}
	}
	var out bytes.Buffer
	found := false
	for line := range bytes.Lines(old) {
		t := strings.TrimSpace(string(line))
		name, rest, _ := strings.Cut(t, ":")
		if t != "" && !strings.HasPrefix(t, "#") && name == user {
			found = true
			oldRole, _, _ := strings.Cut(rest, ":")
			newRole = oldRole
			if role != "" {
				newRole = role
			}
			fmt.Fprintf(&out, "%s:%s:%s\n", user, newRole, hash)
			continue
		}
		out.Write(line)
		if !bytes.HasSuffix(line, []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	if !found {
		newRole = role
		if newRole == "" {
			newRole = console.RoleViewer
		}
		fmt.Fprintf(&out, "%s:%s:%s\n", user, newRole, hash)
	}
	if _, err := console.ParseUsers(out.Bytes()); err != nil {
		return false, "", err
	}
	mode, uid, gid := os.FileMode(0o600), -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		uid, gid = fileOwner(fi)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, "", err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: gone already
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, "", err
	}
	if uid >= 0 {
		// Only root can give the file away; anyone else keeps their own.
		_ = tmp.Chown(uid, gid)
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return false, "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, "", err
	}
	if err := tmp.Close(); err != nil {
		return false, "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, "", err
	}
	return !found, newRole, nil
}
