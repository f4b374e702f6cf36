package backend

import (
	"strings"
)

// smtpReply is one complete, possibly multi-line SMTP reply (RFC 5321
// 4.2).
type smtpReply struct {
	code  int      // e.g. 250
	lines []string // text of each line, without code and separator
}

// parseReplyLine parses one reply line (CRLF optional): three digits, the
// first 2 to 5, then "-" (more lines follow), " " or the end of the line
// (RFC 5321 4.2: "Reply-line = *( Reply-code "-" [ textstring ] CRLF )
// Reply-code [ SP textstring ] CRLF").
func parseReplyLine(line []byte) (code int, more bool, text string, ok bool) {
	l := trimCRLF(line)
	if len(l) < 3 {
		return 0, false, "", false
	}
	for i := 0; i < 3; i++ {
		if l[i] < '0' || l[i] > '9' {
			return 0, false, "", false
		}
		code = code*10 + int(l[i]-'0')
	}
	if l[0] < '2' || l[0] > '5' {
		return 0, false, "", false
	}
	if len(l) == 3 {
		return code, false, "", true
	}
	switch l[3] {
	case '-':
		more = true
	case ' ':
	default:
		return 0, false, "", false
	}
	return code, more, string(l[4:]), true
}

// ehloKeywords returns the extension lines of an EHLO reply: every line
// after the first (which names the server), keyword upper-cased, params
// kept (RFC 5321 4.1.1.1).
func ehloKeywords(r smtpReply) []string {
	if len(r.lines) < 2 {
		return []string{}
	}
	out := make([]string, 0, len(r.lines)-1)
	for _, l := range r.lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw == "" {
			continue
		}
		if params != "" {
			out = append(out, strings.ToUpper(kw)+" "+params)
		} else {
			out = append(out, strings.ToUpper(kw))
		}
	}
	return out
}

// extParams returns the parameters of keyword in exts and whether it is
// there.
func extParams(exts []string, keyword string) ([]string, bool) {
	for _, e := range exts {
		kw, params, _ := strings.Cut(e, " ")
		if kw == keyword {
			return strings.Fields(strings.ToUpper(params)), true
		}
	}
	return nil, false
}

// validHelo reports whether name can be replayed in an EHLO/HELO command:
// 1 to 255 printable ASCII octets, no space (RFC 5321 4.1.1.1 Domain or
// address literal; 4.5.3.1.2 limits a domain to 255 octets). The proxy
// makes sure of the same before the login decision (smtpwire.HeloASCII),
// so this is a last guard that never fires for a name it accepted.
func validHelo(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= 0x20 || name[i] >= 0x7f {
			return false
		}
	}
	return true
}
