package audit

import (
	"context"
	"strings"
	"time"
)

// Action is one change made through the web console: which console
// user, from which address, did what, when.
type Action struct {
	Time   time.Time `json:"time"`
	User   string    `json:"console_user"`
	Remote string    `json:"remote"`
	What   string    `json:"what"`
}

// maxActionText bounds each stored field; the console's own limits keep
// them far shorter.
const maxActionText = 1000

// AddAction stores one console action. It writes at once (not through
// the decisions' queue, which may drop under load): the caller bounds
// the wait with ctx; the single connection may be busy with a batch of
// decisions or a purge chunk for a moment. Rows older than the retention
// period are purged with the login rows.
func (s *Store) AddAction(ctx context.Context, a Action) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO actions (time, console_user, remote, what) VALUES (?, ?, ?, ?)`,
		a.Time.UnixMilli(), text(a.User), text(a.Remote), text(a.What))
	return err
}

// Actions returns the stored console actions, newest first, at most
// limit (0: 500) after skipping offset.
func (s *Store) Actions(ctx context.Context, limit, offset int) ([]Action, error) {
	if limit <= 0 {
		limit = 500
	}
	rows, err := s.db.QueryContext(ctx, `SELECT time, console_user, remote, what FROM actions
		ORDER BY time DESC, id DESC LIMIT ? OFFSET ?`, limit, max(offset, 0))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Action
	for rows.Next() {
		var a Action
		var ms int64
		if err := rows.Scan(&ms, &a.User, &a.Remote, &a.What); err != nil {
			return nil, err
		}
		a.Time = time.UnixMilli(ms).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// text is valid UTF-8 of at most maxActionText bytes.
func text(s string) string {
	if len(s) > maxActionText {
		s = s[:maxActionText]
	}
	return strings.ToValidUTF8(s, "?")
}
