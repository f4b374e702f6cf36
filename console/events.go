package console

// Live parts through server-sent events, every eventEvery while the
// session lasts: GET /console/events streams "overview" events (the
// overview's figures, JSON), GET /console/events?page=sessions&q=&p=
// streams "sessions" events (the live sessions table's rows of that
// filter and page, rendered by the page's own template for the
// session's role). One producer per kind gathers for all streams
// (feed.go). static/console.js puts them into the page. Without
// JavaScript a page shows what it had at its load.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const (
	// eventEvery is how often the stream sends the live figures.
	eventEvery = 2 * time.Second
	// maxStreams bounds the open streams: each holds a connection and a
	// goroutine; more get 503 (the page still works).
	maxStreams = 32
	// streamWrite bounds each event's write; the admin listener's own
	// write timeout would end the stream after 30 s.
	streamWrite = 10 * time.Second
)

// liveFigures is the "overview" event's data.
type liveFigures struct {
	Sessions int    `json:"sessions"`
	Rate     string `json:"rate"`
}

func (s *Server) liveFigures() liveFigures {
	var o Overview
	if s.c.Overview != nil {
		o = s.c.Overview()
	}
	var total float64
	for _, n := range o.Logins {
		total += n
	}
	f := liveFigures{Sessions: o.Sessions, Rate: "not known yet (needs a minute of samples)"}
	if pm, ok := s.rate.perMinute(s.c.Now(), total); ok {
		f.Rate = fmt.Sprintf("%.1f", pm)
	}
	return f
}

// overviewEvent is the "overview" event of the current figures, the
// same bytes for every stream.
func (s *Server) overviewEvent() string {
	data, _ := json.Marshal(s.liveFigures())
	return sseEvent("overview", string(data))
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	sessions := q.Get("page") == "sessions"
	view, ok := parseSessionView(q.Get("q"), q.Get("p"))
	if sessions && !ok {
		http.Error(w, "bad filter or page", http.StatusBadRequest)
		return
	}
	if s.streams.Add(1) > maxStreams {
		s.streams.Add(-1)
		http.Error(w, "too many open event streams", http.StatusServiceUnavailable)
		return
	}
	defer s.streams.Add(-1)
	ck, _ := r.Cookie(cookieName) // signedIn found it
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	// Every stream of a kind reads the one producer's snapshot (feed.go).
	var next <-chan struct{}
	var ovEvent string
	var live *liveSessions
	if sessions {
		live, next = s.liveFeed.join()
		defer s.liveFeed.leave()
	} else {
		ovEvent, next = s.overviewFeed.join()
		defer s.overviewFeed.leave()
	}
	for {
		ev := ovEvent // "" (nothing sent) until a first snapshot exists
		if sessions && live != nil {
			rows, err := s.liveRows(live, view, sess)
			if err != nil {
				s.c.Log.Error("console: live sessions failed to render", "err", err)
				return
			}
			ev = sseEvent("sessions", rows)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamWrite))
		if _, err := io.WriteString(w, ev); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-next:
			if sessions {
				live, next = s.liveFeed.latest()
			} else {
				ovEvent, next = s.overviewFeed.latest()
			}
		case <-sess.gone: // ended, or its role changed: look again now
		}
		// The stream ends with the session (sign-out, idle timeout,
		// account removed); it is no activity of the user's, so it does
		// not keep the session. A changed role applies to the next event.
		if sess = s.lookup(ck.Value, false); sess == nil {
			return
		}
	}
}

// sseEvent is one server-sent event: each line of data its own "data:"
// line (the browser joins them with newlines).
func sseEvent(name, data string) string {
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	for _, l := range strings.Split(strings.ReplaceAll(data, "\r", ""), "\n") {
		b.WriteString("data: " + l + "\n")
	}
	b.WriteString("\n")
	return b.String()
}
