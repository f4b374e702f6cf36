package main

// Wiring of the web console (package console, docs/console.md) on the
// admin listener: the gateway's guard, login history, current policy and
// running state, behind admin.console.users_file.

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/console"
	"github.com/mailgate/mailgate/policy"
	dto "github.com/prometheus/client_model/go"
)

// newConsole is gateway g's console; nil when admin.console.users_file
// is not set.
func newConsole(g *gateway, c ConsoleConfig) *console.Server {
	if c.UsersFile == "" {
		return nil
	}
	cfg := g.current().cfg
	cc := console.Config{
		UsersFile:    c.UsersFile,
		IdleTimeout:  c.IdleTimeout,
		FailureDelay: cfg.Limits.WithDefaults().AuthFailureDelay,
		Log:          g.log.With("component", "console"),
		Decide: func(r policy.Request) policy.Decision {
			return g.current().pol.Decide(r)
		},
		NormalizeAccount: func(login string) string {
			return audit.Normalize(login, g.current().cfg.Policy.DefaultDomain)
		},
		Overview: func() console.Overview { return g.overview() },
		Sessions: func() []console.Session {
			var out []console.Session
			for _, ls := range g.srv.LiveSessions() {
				out = append(out, console.Session{ID: ls.ID, Account: ls.Account, Addr: ls.Addr, Protocol: string(ls.Protocol),
					Listener: ls.Listener, Since: ls.Since, BytesIn: ls.BytesIn, BytesOut: ls.BytesOut})
			}
			return out
		},
		Disconnect: g.srv.Disconnect,
		Exceptions: func() ([]console.Exception, error) { return listExceptions(g.current().cfg.Policy) },
		Allow: func(ch policy.Change) ([]string, error) {
			res, err := policy.Allow(g.current().cfg.Policy, ch, time.Now())
			if err != nil {
				return nil, err
			}
			return append(editLines(res), g.reloadPolicy()...), nil
		},
		Revoke: func(ch policy.Change) ([]string, error) {
			rs, err := policy.Revoke(g.current().cfg.Policy, ch)
			var out []string
			for _, r := range rs {
				out = append(out, editLines(r)...)
			}
			if err != nil {
				return out, err
			}
			return append(out, g.reloadPolicy()...), nil
		},
		Country: func(a netip.Addr) string { return g.current().geo.Lookup(a).Code() },
	}
	if g.guard != nil && g.guard.g != nil {
		cc.Guard = g.guard.g
	}
	if g.audit != nil {
		cc.Audit = g.audit
		cc.ActionLog = g.audit // the action log lasts in the audit database
	}
	cs := console.New(cc)
	g.console.Store(cs)
	return cs
}

// reloadConsoleUsers applies the console's users file to its open
// sessions (removed accounts signed out, changed roles applied); the
// console logs what it did and a file it cannot read, whose error is
// returned for the reload's count.
func (g *gateway) reloadConsoleUsers() error {
	if cs := g.console.Load(); cs != nil {
		return cs.ReloadUsers()
	}
	return nil
}

// started is when this process started serving, for the overview.
var started = time.Now()

// overview reads what the console's overview shows from the running
// gateway: the registry's login and decision counters, the last
// configuration load, the geo databases and the certificates.
func (g *gateway) overview() console.Overview {
	o := console.Overview{
		Started:   started,
		Sessions:  g.srv.Sessions(),
		Logins:    map[string]float64{},
		Decisions: map[string]float64{},
	}
	if l := g.ops.lastLoad.Load(); l != nil {
		o.ReloadAt = l.at
		if l.err != nil {
			o.ReloadErr = l.err.Error()
		}
	}
	mfs, err := g.ops.reg.Gather()
	if err != nil {
		g.log.Warn("console: metrics not gathered", "err", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "mailgate_logins_total":
			for _, m := range mf.GetMetric() {
				o.Logins[label(m, "result")] += m.GetCounter().GetValue()
			}
		case "mailgate_policy_decisions_total":
			for _, m := range mf.GetMetric() {
				o.Decisions[label(m, "result")+" "+label(m, "rule")] += m.GetCounter().GetValue()
			}
		}
	}
	st := g.current()
	for _, in := range st.geo.Info() {
		o.Geo = append(o.Geo, console.GeoDB{Name: in.Name, Type: in.Type, Built: in.Built})
	}
	for name, t := range g.tm.Expiry() {
		o.Certs = append(o.Certs, console.Cert{Name: name, NotAfter: t})
	}
	return o
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// reloadPolicy makes an edit take effect now rather than at the next
// policy.watch_interval; a failure is reported, and the watcher tries
// again.
func (g *gateway) reloadPolicy() []string {
	if err := g.current().pol.Reload(); err != nil {
		g.log.Error("console: policy reload after an edit failed", "err", err)
		return []string{"warning: the policy was not reloaded: " + err.Error()}
	}
	return nil
}

// editLines is what `mailgate allow` prints for an edit, with the file
// named by its base name (the page is no place for server paths).
func editLines(r policy.EditResult) []string {
	base := filepath.Base(r.File)
	var out []string
	for _, d := range r.Detail {
		out = append(out, strings.ReplaceAll(d, r.File, base))
	}
	for _, w := range r.Warnings {
		out = append(out, "warning: "+strings.ReplaceAll(w, r.File, base))
	}
	if r.Changed {
		out = append(out, base+" written")
	}
	return out
}

// listExceptions reads the allow entries of the policy files.
func listExceptions(c policy.Config) ([]console.Exception, error) {
	var out []console.Exception
	if c.UserFile != "" {
		data, err := os.ReadFile(c.UserFile)
		if err != nil {
			return nil, err
		}
		entries, _ := policy.ParseUserFile(data)
		for _, e := range entries {
			out = append(out, console.Exception{User: e.User, Target: e.Target, Where: fmt.Sprintf("%s:%d", filepath.Base(c.UserFile), e.Line)})
		}
	}
	if c.RulesFile != "" {
		data, err := os.ReadFile(c.RulesFile)
		if err != nil {
			return out, err
		}
		rf, err := policy.ParseRules(c.RulesFile, data)
		if err != nil {
			return out, err
		}
		for _, r := range rf.Rules {
			if !r.Allow {
				continue
			}
			for _, u := range r.Users {
				for _, t := range r.Targets {
					out = append(out, console.Exception{User: u, Target: t, Protocols: r.Protocols, Until: r.Until, Note: r.Note,
						Where: fmt.Sprintf("%s:%d", filepath.Base(c.RulesFile), r.Line)})
				}
			}
		}
	}
	return out, nil
}
