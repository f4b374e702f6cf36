//go:build integration

package integration

// The web console (docs/console.md) driven by the real headless Chromium
// through chromedp, against the real binary in front of the harness's
// Dovecot: sign in, a real denied IMAPS login on the country map and
// table, a travel exception added and revoked, a ban added and lifted
// (and the source's logins with it), a live session disconnected, the viewer role, a cross-site form, and
// five wrong console passwords.
//
// One browser serves the whole test (Chromium is heavy on a shared
// machine). With MAILGATE_SCREENSHOTS=docs/console (a path relative to
// the repository root, or absolute) the test writes a screenshot of each
// page there for docs/console.md; a normal run writes nothing.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Console accounts of the test, made with `mailgate admin passwd`.
const (
	consoleAdmin    = "root"
	consoleAdminPW  = "console-admin-pw"
	consoleViewer   = "helpdesk"
	consoleViewerPW = "console-viewer-pw"
	// consoleDeputy is the account the wrong passwords are tried on,
	// before anyone signs in: a successful sign-in exempts the address
	// from lockouts (a proven user is never locked out).
	consoleDeputy   = "deputy"
	consoleDeputyPW = "console-deputy-pw"
	// bannedSrc is a GB address (127.0.0.16/28) the test bans and lifts.
	bannedSrc = "127.0.0.29"
)

// consoleMailgate starts mailgate with the console on its own admin port
// and the login history on; it returns the console's base URL.
func consoleMailgate(t *testing.T) (*Mailgate, string, int) {
	t.Helper()
	// A small failure penalty and no tarpit: the five wrong console
	// passwords would otherwise take a minute.
	return consoleMailgateGuard(t, "{tarpit: {after: 0}, failure_penalty: {init: 50ms, max: 200ms}}")
}

// consoleMailgateGuard is consoleMailgate with guardYAML as its guard
// section.
func consoleMailgateGuard(t *testing.T, guardYAML string) (*Mailgate, string, int) {
	t.Helper()
	hs := need(t)
	c := newCfg(t)
	ports, err := freePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	mine := []int{c.IMAPS, c.IMAP, c.IMAPSLB, c.POP3S, c.POP3SLB, c.SMTPS, c.SMTPSLB, c.Submission}
	ports = slices.DeleteFunc(ports, func(p int) bool { return slices.Contains(mine, p) })
	admin := addr(ports[0])
	dir := t.TempDir()
	users := filepath.Join(dir, "console.users")
	// -cost 4: at the default 12 each sign-in took 10 to 30 s of the
	// race-built binary's CPU on the 2-core CI machine.
	for _, u := range []struct{ name, pw, role string }{
		{consoleAdmin, consoleAdminPW, "admin"}, {consoleViewer, consoleViewerPW, "viewer"}, {consoleDeputy, consoleDeputyPW, "admin"},
	} {
		cmd := exec.Command(hs.mailgateBin, "admin", "passwd", "-file", users, "-cost", "4", "-role", u.role, u.name)
		cmd.Stdin = strings.NewReader(u.pw + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mailgate admin passwd %s: %v\n%s", u.name, err, out)
		}
	}
	c.Extra = fmt.Sprintf(`admin: {address: %q, console: {users_file: %q}}
audit: {path: %q, batch_interval: 50ms}
guard: %s`, admin, users, filepath.Join(dir, "audit.db"), guardYAML)
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The travel exceptions go to a rules file.
	render := func() string {
		return strings.Replace(c.YAML(), "  allow_countries: [GB, US]\n", fmt.Sprintf("  allow_countries: [GB, US]\n  rules_file: %q\n", rules), 1)
	}
	if !strings.Contains(render(), "rules_file") {
		t.Fatal("the test config has no place for policy.rules_file")
	}
	m := launchRetrying(t, render, func() { c.pickPorts(t) })
	if !waitFor(func() bool { return accepting(admin) }, eventually) {
		t.Fatalf("admin listener %s never accepted; log:\n%s", admin, m.Log())
	}
	return m, "http://" + admin, c.IMAPS
}

// browser starts one headless Chromium for the test; a missing chromium
// skips (fails in CI).
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if inCI() {
			t.Fatal("chromium not installed")
		}
		t.Skip("chromium not installed")
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// page is the browser's tab with bounded steps.
type page struct {
	t     *testing.T
	ctx   context.Context
	shots string // screenshot directory; "" for none
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// submit clicks sel and waits for the page it leads to; it returns that
// page's HTTP status.
func (p *page) submit(sel string) int64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(sel))
	if err != nil {
		p.t.Fatalf("browser: submit %s: %v", sel, err)
	}
	return resp.Status
}

// eval runs a JavaScript expression in the page.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("browser: %s: %v", js, err)
	}
	return v
}

// text is the visible text of the page's main element.
func (p *page) text() string {
	p.t.Helper()
	return eval[string](p, `document.querySelector("main").innerText`)
}

// shot writes a screenshot of the whole page when screenshots are asked for.
func (p *page) shot(name string) {
	p.t.Helper()
	if p.shots == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.shots, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// signIn fills in the sign-in form and submits it in one step in the
// page, so nothing (such as the browser's password manager filling in a
// password it saw before) can change the fields in between.
func (p *page) signIn(user, pw string) (int64, string) {
	p.t.Helper()
	p.do(chromedp.WaitReady(`main button[type="submit"]`))
	js := fmt.Sprintf(`(() => { document.querySelector("#user").value = %q; document.querySelector("#password").value = %q;
		document.querySelector("main form").requestSubmit(); return true; })()`, user, pw)
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](js)(ctx, t)
		return err
	}))
	if err != nil {
		p.t.Fatalf("browser: sign-in as %s: %v", user, err)
	}
	p.do(chromedp.WaitReady("main h1"))
	return resp.Status, eval[string](p, `document.title`)
}

func screenshotDir(t *testing.T) string {
	d := os.Getenv("MAILGATE_SCREENSHOTS")
	if d == "" {
		return ""
	}
	if !filepath.IsAbs(d) {
		d = filepath.Join("..", d) // tests run in integration/
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// imapsFrom logs alice in over IMAPS from src with Python's imaplib and
// returns "OK", "NO", or "closed" when mailgate closed the connection
// before the greeting (a banned source).
func imapsFrom(t *testing.T, port int, src, pass string) string {
	t.Helper()
	out, err := python(t, imaplibAudit, src, itoa(port), "alice@example.test", pass)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "closed"
		}
		t.Fatalf("imaplib from %s: %v\n%s", src, err, out)
	}
	return strings.TrimSpace(out)
}

func TestConsoleBrowser(t *testing.T) {
	ctx := browser(t)
	m, base, imaps := consoleMailgate(t)
	p := &page{t: t, ctx: ctx, shots: screenshotDir(t)}

	// Sign in as an admin.
	p.do(chromedp.Navigate(base + "/console/"))
	if title := eval[string](p, `document.title`); title != "Sign in - mailgate console" {
		t.Fatalf("an unsigned visit shows %q, want the sign-in page", title)
	}
	p.shot("signin")
	// Five wrong passwords, then the right one: every answer is the
	// wrong-password answer, as for a mail login the guard has locked.
	var first string
	for i := 1; i <= 6; i++ {
		pw := fmt.Sprintf("wrong-password-%d", i)
		if i == 6 {
			pw = consoleDeputyPW
		}
		code, title := p.signIn(consoleDeputy, pw)
		alert := eval[string](p, `(document.querySelector(".alert") || {innerText: ""}).innerText`)
		if i == 1 {
			first = alert
			if code != 200 || title != "Sign in - mailgate console" || !strings.Contains(alert, "wrong user name or password") {
				t.Fatalf("wrong console password: %d %q %q", code, title, alert)
			}
			p.shot("signin-failed")
		}
		if code != 200 || title != "Sign in - mailgate console" || alert != first {
			t.Errorf("attempt %d: %d %q %q, want 200 on the sign-in page with %q", i, code, title, alert, first)
		}
	}
	if !hasLine(m.Log(), "console: sign-in refused", "console_user="+consoleDeputy, "reason=\"guard:") {
		t.Errorf("the right password after five wrong ones was not refused by the guard:\n%s", m.Log())
	}

	if code, title := p.signIn(consoleAdmin, consoleAdminPW); code != 200 || title != "Overview - mailgate console" {
		t.Fatalf("sign-in: %d %q\n%s", code, title, p.text())
	}

	// A real denied IMAPS login: 127.0.0.2 is placed in Russia.
	if got := imapsFrom(t, imaps, ruLocal, users["alice@example.test"]); got != "NO" {
		t.Fatalf("IMAPS login from RU: %s, want NO", got)
	}
	var failures string
	if !waitFor(func() bool {
		p.do(chromedp.Navigate(base + "/console/countries?span=1h"))
		failures = eval[string](p, `document.querySelector("#c-RU").getAttribute("data-failures")`)
		return failures != "0"
	}, eventually) {
		t.Fatalf("Russia never shaded on the map:\n%s", p.text())
	}
	if cls := eval[string](p, `document.querySelector("#c-RU").getAttribute("class")`); failures != "1" || cls != "h1" {
		t.Errorf("map: Russia has %s failures, class %q; want 1, h1", failures, cls)
	}
	row := eval[string](p, `[...document.querySelectorAll("#country-table tbody tr")].map(r => r.innerText).join("\n")`)
	if !strings.Contains(row, "Russia") || !strings.Contains(row, "RU") {
		t.Errorf("country table lacks Russia:\n%s", row)
	}
	p.do(chromedp.Navigate(base + "/console/"))
	if txt := p.text(); !strings.Contains(txt, "countryfailed") {
		t.Errorf("overview does not count the denied login:\n%s", txt)
	}
	p.shot("overview")
	p.do(chromedp.Navigate(base + "/console/countries?span=1h"))
	p.shot("countries")

	// The account's history has the denied login.
	p.do(chromedp.Navigate(base+"/console/account"), chromedp.SetValue("#user", "alice@example.test"))
	p.submit(`main form button[type="submit"]`)
	if h := eval[string](p, `document.querySelector("#history").innerText`); !strings.Contains(h, "denied") || !strings.Contains(h, "RU") {
		t.Errorf("history of alice lacks the denied login:\n%s", h)
	}
	p.shot("account")

	// The policy test names the decision and the rule.
	p.do(chromedp.Navigate(base+"/console/policy"), chromedp.SetValue("#user", "alice@example.test"), chromedp.SetValue("#addr", ruLocal))
	p.submit(`main form button[type="submit"]`)
	if v, rule := eval[string](p, `document.querySelector("#verdict").innerText`), eval[string](p, `document.querySelector("#rule").innerText`); v != "deny" || rule == "" {
		t.Errorf("policy test for RU: %q by %q, want deny by a rule", v, rule)
	}
	p.shot("policy")

	// A travel exception: alice may log in from Russia until tomorrow;
	// revoked, she may not.
	p.do(chromedp.Navigate(base+"/console/exceptions"),
		chromedp.SetValue("#exc-user", "alice@example.test"), chromedp.SetValue("#exc-target", "RU"),
		chromedp.SetValue("#exc-until", time.Now().Add(24*time.Hour).Format("2006-01-02")), chromedp.SetValue("#exc-note", "travelling, ticket 4711"))
	if code := p.submit(`#addexc ~ form button[type="submit"]`); code != 200 || !strings.Contains(p.text(), "policy is reloaded") {
		t.Fatalf("add exception: %d\n%s", code, p.text())
	}
	if got := imapsFrom(t, imaps, ruLocal, users["alice@example.test"]); got != "OK" {
		t.Errorf("login from RU with the exception: %s, want OK\n%s", got, p.text())
	}
	p.shot("exceptions")
	if code := p.submit(`button[aria-label="Revoke alice@example.test from RU"]`); code != 200 || strings.Contains(eval[string](p, `document.querySelector("#exceptions").innerText`), "RU") {
		t.Fatalf("revoke exception: %d\n%s", code, p.text())
	}
	if got := imapsFrom(t, imaps, ruLocal, users["alice@example.test"]); got != "NO" {
		t.Errorf("login from RU after the revoke: %s, want NO", got)
	}

	// Ban a source from the console: its logins stop; lift it: they work.
	if got := imapsFrom(t, imaps, bannedSrc, users["alice@example.test"]); got != "OK" {
		t.Fatalf("login from %s before the ban: %s", bannedSrc, got)
	}
	p.do(chromedp.Navigate(base+"/console/bans"),
		chromedp.SetValue("#prefix", bannedSrc), chromedp.SetValue("#duration", "1h"), chromedp.SetValue("#reason", "browser test"))
	if code := p.submit(`#addban ~ form button[type="submit"]`); code != 200 || !strings.Contains(p.text(), bannedSrc+"/32") {
		t.Fatalf("add ban: %d\n%s", code, p.text())
	}
	if got := imapsFrom(t, imaps, bannedSrc, users["alice@example.test"]); got != "closed" {
		t.Fatalf("login from banned %s: %s, want the connection closed", bannedSrc, got)
	}
	// A second ban, kept for the viewer's page below.
	p.do(chromedp.SetValue("#prefix", "192.0.2.0/24"), chromedp.SetValue("#duration", "2h"), chromedp.SetValue("#reason", "documentation range"))
	p.submit(`#addban ~ form button[type="submit"]`)
	p.shot("bans")
	if code := p.submit(fmt.Sprintf(`button[aria-label="Lift the ban of %s/32"]`, bannedSrc)); code != 200 || strings.Contains(p.text(), bannedSrc+"/32") {
		t.Fatalf("lift ban: %d\n%s", code, p.text())
	}
	if got := imapsFrom(t, imaps, bannedSrc, users["alice@example.test"]); got != "OK" {
		t.Errorf("login from %s after the ban was lifted: %s, want OK", bannedSrc, got)
	}
	p.do(chromedp.Navigate(base + "/console/actions"))
	if txt := p.text(); !strings.Contains(txt, "ban lifted: "+bannedSrc+"/32") || !strings.Contains(txt, consoleAdmin) {
		t.Errorf("action log lacks the lifted ban:\n%s", txt)
	}
	p.shot("actions")

	// A live session: an admin disconnects it and the client sees its
	// connection closed.
	// The overview, open meanwhile, counts it without a reload (the
	// server-sent events).
	p.do(chromedp.Navigate(base + "/console/"))
	if n := eval[string](p, `document.querySelector("#sessions").innerText`); n != "0" {
		t.Fatalf("open connections before the session: %s", n)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer pcancel()
	py := exec.CommandContext(pctx, "python3", "-c", imaplibStay, "127.0.0.1", itoa(imaps), "alice@example.test", users["alice@example.test"])
	pyOut, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	py.Stderr = py.Stdout
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	defer py.Wait()
	defer pcancel()
	lines := bufio.NewScanner(pyOut)
	if !lines.Scan() || lines.Text() != "LOGGEDIN" {
		t.Fatalf("imaplib session: %q, want LOGGEDIN", lines.Text())
	}
	if !waitFor(func() bool { return eval[string](p, `document.querySelector("#sessions").innerText`) == "1" }, eventually) {
		t.Errorf("the open overview never showed the new connection: %s", eval[string](p, `document.querySelector("#sessions").innerText`))
	}
	p.do(chromedp.Navigate(base + "/console/sessions"))
	if txt := eval[string](p, `document.querySelector("#live").innerText`); !strings.Contains(txt, "alice@example.test") || !strings.Contains(txt, "GB") {
		t.Fatalf("live sessions lack alice from GB:\n%s", txt)
	}
	p.shot("sessions")
	if code := p.submit(`button[aria-label="Disconnect alice@example.test from 127.0.0.1"]`); code != 200 {
		t.Fatalf("disconnect: %d\n%s", code, p.text())
	}
	if !lines.Scan() || lines.Text() != "closed" {
		t.Errorf("the disconnected IMAP client says %q, want closed", lines.Text())
	}

	// A form on another origin (another port of the same host: same
	// site, so even the SameSite=Strict cookie goes along) is refused.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>evil</title><form method="post" action="%s/console/bans/remove">
<input type="hidden" name="prefix" value="192.0.2.0/24"><input type="hidden" name="csrf" value="guess">
<button id="go" type="submit">win a prize</button></form>`, base)
	}))
	defer evil.Close()
	p.do(chromedp.Navigate(evil.URL))
	if code := p.submit("#go"); code != http.StatusForbidden {
		t.Errorf("cross-site form post: %d, want 403", code)
	}
	p.do(chromedp.Navigate(base + "/console/bans"))
	if !strings.Contains(p.text(), "192.0.2.0/24") {
		t.Errorf("the cross-site post lifted the ban:\n%s", p.text())
	}

	// A viewer: no change buttons, and a forged POST with its own form
	// token is refused.
	p.submit(`header form button[type="submit"]`) // sign out
	if code, title := p.signIn(consoleViewer, consoleViewerPW); code != 200 || title != "Overview - mailgate console" {
		t.Fatalf("viewer sign-in: %d %q", code, title)
	}
	p.do(chromedp.Navigate(base + "/console/bans"))
	if n := eval[int](p, `document.querySelectorAll('form[action$="/bans/remove"], form[action$="/bans/add"], form[action$="/unlock"]').length`); n != 0 || !strings.Contains(p.text(), "192.0.2.0/24") {
		t.Errorf("viewer's bans page: %d change forms (want 0), text:\n%s", n, p.text())
	}
	p.shot("bans-viewer")
	eval[bool](p, `(() => { const f = document.createElement("form"); f.method = "post"; f.action = "/console/bans/remove";
		for (const [k, v] of [["csrf", document.querySelector('input[name="csrf"]').value], ["prefix", "192.0.2.0/24"]]) {
			const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i); }
		const b = document.createElement("button"); b.id = "forged"; b.type = "submit"; f.appendChild(b);
		document.body.appendChild(f); return true; })()`)
	if code := p.submit("#forged"); code != http.StatusForbidden || !strings.Contains(p.text(), "may not change anything") {
		t.Errorf("viewer's forged POST: %d\n%s", code, p.text())
	}
	p.do(chromedp.Navigate(base + "/console/bans"))
	if !strings.Contains(p.text(), "192.0.2.0/24") {
		t.Errorf("the viewer's forged POST lifted the ban")
	}
	// At phone width.
	p.do(chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/console/"))
	p.shot("overview-phone")
	p.do(chromedp.EmulateViewport(1200, 900))

	// No console password, right or wrong, reaches the log.
	for _, pw := range []string{consoleAdminPW, consoleViewerPW, consoleDeputyPW, "wrong-password-1", "wrong-password-5"} {
		if strings.Contains(m.Log(), pw) {
			t.Errorf("mailgate's log holds the console password %q", pw)
		}
	}
}

// imaplibStay logs in over IMAPS, prints LOGGEDIN, then sends NOOP every
// 100 ms and prints "closed" once the connection fails (at most a minute).
const imaplibStay = `
import imaplib, socket, ssl, sys, time
src, port, user, password = sys.argv[1:5]

class SourceIMAP4SSL(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout, source_address=(src, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.example.test")

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = SourceIMAP4SSL(host="127.0.0.1", port=int(port), ssl_context=ctx, timeout=20)
c.login(user, password)
print("LOGGEDIN", flush=True)
for i in range(600):
    try:
        c.noop()
    except Exception:
        print("closed", flush=True)
        sys.exit(0)
    time.sleep(0.1)
print("still open", flush=True)
`
