package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// versionShape is the line `mailgate version` prints.
var versionShape = regexp.MustCompile(`^mailgate \S+ \((?:[0-9a-f]{12}(?:\+dirty)?(?:, \S+)?|commit unknown)\) go\S+$`)

func TestVersionLine(t *testing.T) {
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "-trimpath", Value: "true"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-06T14:36:19Z"},
			{Key: "vcs.modified", Value: modified},
		}
	}
	for _, tc := range []struct {
		name    string
		ld      string
		main    string
		set     []debug.BuildSetting
		noInfo  bool
		want    string
		wantRev string
	}{
		{name: "release from a clone", ld: "1.0.0", main: "(devel)", set: vcs("false"),
			want: "mailgate 1.0.0 (0123456789ab, 2026-12-06T14:36:19Z) go1.26.8", wantRev: "0123456789abcdef0123456789abcdef01234567"},
		{name: "ldflag wins over the module version", ld: "1.0.0", main: "v0.0.0-20261206143619-0123456789ab", set: vcs("false"),
			want: "mailgate 1.0.0 (0123456789ab, 2026-12-06T14:36:19Z) go1.26.8", wantRev: "0123456789abcdef0123456789abcdef01234567"},
		{name: "plain go build in a clone", ld: "dev", main: "v0.0.0-20261206143619-0123456789ab+dirty", set: vcs("true"),
			want: "mailgate v0.0.0-20261206143619-0123456789ab+dirty (0123456789ab+dirty, 2026-12-06T14:36:19Z) go1.26.8", wantRev: "0123456789abcdef0123456789abcdef01234567"},
		{name: "go install at a tag", ld: "dev", main: "v1.2.3",
			want: "mailgate v1.2.3 (commit unknown) go1.26.8"},
		{name: "no vcs stamp", ld: "dev", main: "(devel)",
			want: "mailgate dev (commit unknown) go1.26.8"},
		{name: "empty ldflag", ld: "", main: "(devel)",
			want: "mailgate dev (commit unknown) go1.26.8"},
		{name: "no build info", ld: "dev", noInfo: true,
			want: "mailgate dev (commit unknown) " + runtime.Version()},
	} {
		var bi *debug.BuildInfo
		if !tc.noInfo {
			bi = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mailgate/mailgate", Version: tc.main}, Settings: tc.set}
		}
		b := readBuild(tc.ld, bi, !tc.noInfo)
		if got := b.String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if !versionShape.MatchString(b.String()) {
			t.Errorf("%s: %q does not have the version line's shape", tc.name, b.String())
		}
		if b.Revision != tc.wantRev {
			t.Errorf("%s: revision %q, want %q", tc.name, b.Revision, tc.wantRev)
		}
	}

	// What this test binary says has the same shape.
	var out strings.Builder
	if code := run([]string{"version"}, nil, &out, &out); code != 0 || !versionShape.MatchString(strings.TrimSpace(out.String())) {
		t.Errorf("mailgate version: exit %d, %q", code, out.String())
	}
}

// A binary built in a git clone names its commit, with -X main.version
// (the Dockerfile's and the docs' build line) and without it, and says
// +dirty when the clone has changes. The module is copied into a fresh
// repository: Go records no commit for a git worktree or with
// -buildvcs=false, either of which a developer's checkout may be.
func TestVersionOfARealBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mailgate twice")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	repo := t.TempDir()
	copyModule(t, filepath.Join("..", ".."), repo)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.test", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	rev := git("rev-parse", "HEAD")[:12]

	build := func(ldflags string) string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "mailgate")
		cmd := exec.Command(goBin, "build", "-buildvcs=true", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/mailgate")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatalf("mailgate version: %v", err)
		}
		line := strings.TrimSpace(string(out))
		if !versionShape.MatchString(line) {
			t.Errorf("mailgate version = %q: not the version line's shape", line)
		}
		return line
	}
	if got := build("-s -w -X main.version=1.2.3"); !strings.HasPrefix(got, "mailgate 1.2.3 ("+rev+", ") {
		t.Errorf("release build: %q, want version 1.2.3 and commit %s", got, rev)
	}
	if err := os.WriteFile(filepath.Join(repo, "untracked.txt"), []byte("change\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := build("-s -w")
	if !strings.HasPrefix(got, "mailgate v0.0.0-") || !strings.Contains(got, "("+rev+"+dirty, ") {
		t.Errorf("plain build with a change: %q, want the module's pseudo-version and commit %s+dirty", got, rev)
	}
}

// copyModule copies the module's files from src to dst, without its .git.
func copyModule(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		}
		return nil // symlinks and the like are no part of the build
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mailgate_build_info carries what `mailgate version` says.
func TestBuildInfoMetric(t *testing.T) {
	e := startReloadEnv(t)
	code, body, err := e.do("GET", "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics = %d %v", code, err)
	}
	b := currentBuild()
	want := `mailgate_build_info{goversion="` + b.GoVersion + `",revision="` + b.Revision + `",version="` + b.Version + `"} 1`
	if !strings.Contains(body, want+"\n") {
		t.Errorf("no %s in /metrics:\n%s", want, body)
	}
}
