package console

// The overview's live figures through server-sent events: GET
// /console/events streams an "overview" event every eventEvery while
// the session lasts; static/console.js puts the figures into the page.
// Without JavaScript the page shows the figures of its load.

import (
	"encoding/json"
	"fmt"
	"net/http"
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

func (s *Server) events(w http.ResponseWriter, r *http.Request, sess *session) {
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
	t := time.NewTicker(eventEvery)
	defer t.Stop()
	for {
		data, _ := json.Marshal(s.liveFigures())
		_ = rc.SetWriteDeadline(time.Now().Add(streamWrite))
		if _, err := fmt.Fprintf(w, "event: overview\ndata: %s\n\n", data); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		// The stream ends with the session (sign-out, idle timeout).
		if s.currentByValue(ck.Value) == nil {
			return
		}
	}
}
