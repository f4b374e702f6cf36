package console

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// openStream opens an event stream of f's console for the cookie.
func openStream(t *testing.T, srv *httptest.Server, path, ck string) *bufio.Reader {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: ck})
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Body.Close() })
	if r.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, r.StatusCode)
	}
	return bufio.NewReader(r.Body)
}

// readEvent reads one event and returns its data lines joined.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var data []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		l = strings.TrimSuffix(l, "\n")
		if l == "" {
			return strings.Join(data, "\n")
		}
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			data = append(data, d)
		}
	}
}

// TestStreamsShareOneGather: however many streams are open, the
// overview's figures and the live sessions are gathered once per tick
// (plus once when the first stream opens), not once per stream.
func TestStreamsShareOneGather(t *testing.T) {
	var overviews, lists atomic.Int64
	f := newFixture(t, func(c *Config) {
		c.Overview = func() Overview { overviews.Add(1); return Overview{Sessions: 3} }
		c.Sessions = func() []Session {
			lists.Add(1)
			return []Session{{ID: "s1", Account: "alice@example.test", Addr: netip.MustParseAddr("192.0.2.7"), Protocol: "imap", Listener: "imaps"}}
		}
	})
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	const streams, events = 6, 2
	var cks []string
	for i := range streams {
		ck, _ := f.signIn([]string{"root", "help"}[i%2], []string{adminPW, viewerPW}[i%2])
		cks = append(cks, ck)
	}
	overviews.Store(0) // the sign-ins read the overview page
	for _, tc := range []struct {
		path  string
		count *atomic.Int64
	}{{"/console/events", &overviews}, {"/console/events?page=sessions", &lists}} {
		var brs []*bufio.Reader
		for _, ck := range cks {
			brs = append(brs, openStream(t, srv, tc.path, ck))
		}
		for range events {
			for _, br := range brs {
				readEvent(t, br)
			}
		}
		// One gather when the first stream opened, one per tick since:
		// each stream read `events` of them. A stream that fell behind
		// skips to the latest, and opening the streams may take a tick or
		// two on a loaded machine, so allow four more ticks: still half of
		// one gather per stream per event (12).
		if n := tc.count.Load(); n > events+4 {
			t.Errorf("%s: %d gathers for %d streams reading %d events each; want at most %d", tc.path, n, streams, events, events+4)
		}
	}
}

// TestLiveSessionsPaged: the live sessions page and its stream render at
// most livePerPage rows, say how many more there are, filter and page.
func TestLiveSessionsPaged(t *testing.T) {
	var live []Session
	for i := range 250 {
		acct := fmt.Sprintf("user%03d@example.test", i)
		if i%50 == 0 {
			acct = fmt.Sprintf("boss%03d@example.test", i)
		}
		live = append(live, Session{ID: fmt.Sprintf("id%03d", i), Account: acct, Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
			Protocol: "imap", Listener: "imaps", Since: time.Unix(int64(i), 0)})
	}
	f := newFixture(t, func(c *Config) {
		c.Sessions = func() []Session { return live }
		c.Disconnect = func(string) bool { return false }
	})
	ck, _ := f.signIn("root", adminPW)
	rowsOf := func(b string) int { return strings.Count(b, `<th scope="row">`) }

	b := bodyOf(t, f.do("GET", "/console/sessions", "127.0.0.1:5000", ck, nil))
	if n := rowsOf(b); n != livePerPage || !strings.Contains(b, "Sessions 1 to 100 of 250.") || !strings.Contains(b, "150 more not shown") ||
		!strings.Contains(b, `href="/console/sessions?p=1"`) {
		t.Errorf("first page: %d rows\n%s", n, b)
	}
	b = bodyOf(t, f.do("GET", "/console/sessions?p=2", "127.0.0.1:5000", ck, nil))
	if n := rowsOf(b); n != 50 || !strings.Contains(b, "user249@example.test") || strings.Contains(b, "more not shown") ||
		!strings.Contains(b, `data-stream="/console/events?p=2&amp;page=sessions"`) {
		t.Errorf("last page: %d rows\n%s", n, b)
	}
	b = bodyOf(t, f.do("GET", "/console/sessions?q=BOSS", "127.0.0.1:5000", ck, nil))
	if n := rowsOf(b); n != 5 || !strings.Contains(b, `matching &ldquo;boss&rdquo;`) {
		t.Errorf("filter boss: %d rows\n%s", n, b)
	}
	if r := f.do("GET", "/console/sessions?p=-1", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("page -1: %d, want 400", r.StatusCode)
	}

	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	ev := readEvent(t, openStream(t, srv, "/console/events?page=sessions", ck))
	if n := rowsOf(ev); n != livePerPage || !strings.Contains(ev, "150 more not shown") {
		t.Errorf("stream: %d rows\n%s", n, ev)
	}
	ev = readEvent(t, openStream(t, srv, "/console/events?page=sessions&q=boss", ck))
	if n := rowsOf(ev); n != 5 || strings.Contains(ev, "more not shown") {
		t.Errorf("filtered stream: %d rows\n%s", n, ev)
	}
}

// FuzzParseSessionView: any ?q= and ?p= either are refused or give a
// view whose filter is printable, lower case and bounded and whose page
// is in range, and the view of a snapshot never has more than a page of
// rows.
func FuzzParseSessionView(f *testing.F) {
	f.Add("", "")
	f.Add("BOB", "1")
	f.Fuzz(func(t *testing.T, q, p string) {
		v, ok := parseSessionView(q, p)
		if !ok {
			return
		}
		if !printable(v.q, maxLiveQ) || v.q != strings.ToLower(v.q) || v.page < 0 || v.page > maxLivePage {
			t.Fatalf("parseSessionView(%q, %q) = %+v", q, p, v)
		}
		ls := &liveSessions{views: map[sessionView]string{}}
		for i := range 2*livePerPage + 3 {
			ls.rows = append(ls.rows, sessionRow{Session: Session{ID: fmt.Sprint("id", i), Account: fmt.Sprintf("u%d@b.test", i), Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}})
		}
		d := ls.data(v)
		if len(d.Rows) > livePerPage || d.Total > len(ls.rows) || d.More < 0 {
			t.Fatalf("view %+v: %d rows, total %d, more %d", v, len(d.Rows), d.Total, d.More)
		}
	})
}
