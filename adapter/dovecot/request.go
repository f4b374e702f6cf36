package dovecot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/internal/authlimit"
	"github.com/mailgate/mailgate/internal/logfield"
	"github.com/mailgate/mailgate/policy"
)

// maxBody bounds a request body: Dovecot's attributes are a few hundred
// octets, the longest login 320.
const maxBody = 16 << 10

// Bounds on the attributes mailgate reads; longer is not Dovecot.
const (
	// maxHash: auth_policy_hash_truncate = 0 with sha512 gives 128 hex
	// digits.
	maxHash = 128
	// maxSession bounds session_id (Dovecot's are 16 base64 characters).
	maxSession = 128
	// maxDeviceID bounds device_id (%{client_id}, the client's IMAP ID),
	// which is only logged.
	maxDeviceID = 256
)

// request is one allow or report request as Dovecot sends it with the
// default auth_policy_request_attributes (login=%{requested_username}
// pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id}
// protocol=%s session_id=%{session}): a JSON object of strings, to
// which Dovecot adds the booleans tls and, on report, success and
// policy_reject. Other keys are ignored.
type request struct {
	Login, PWHash, DeviceID, Session string
	Protocol                         policy.Protocol
	// Service is Dovecot's service name as sent (imap, pop3,
	// submission, smtp).
	Service string
	Remote  netip.Addr
	// Report only: the password was right and nothing refused the
	// login; a policy server (mailgate) refused it.
	Success, PolicyReject bool
}

// wire is the JSON as decoded; pointers tell a missing key from "".
type wire struct {
	Login        *string `json:"login"`
	PWHash       *string `json:"pwhash"`
	Remote       *string `json:"remote"`
	DeviceID     *string `json:"device_id"`
	Protocol     *string `json:"protocol"`
	Session      *string `json:"session_id"`
	Success      *bool   `json:"success"`
	PolicyReject *bool   `json:"policy_reject"`
}

// errBadLogin marks a request whose only problem is its login: the
// client sent it, so it is refused and counted like unusable
// credentials at the proxy; the other errors are Dovecot's configuration.
var errBadLogin = errors.New("unusable login")

// services maps Dovecot's service names to the policy's protocols.
var services = map[string]policy.Protocol{
	"imap":       policy.IMAP,
	"pop3":       policy.POP3,
	"submission": policy.SMTP,
	"smtp":       policy.SMTP,
}

// parseRequest decodes and validates one request body; report says
// whether success and policy_reject must be there. On an errBadLogin
// error the returned request holds every other attribute (the remote
// address to count the refusal against), with Login escaped for the log.
func parseRequest(body []byte, report bool) (request, error) {
	var w wire
	if len(body) > maxBody {
		return request{}, fmt.Errorf("body over %d octets", maxBody)
	}
	if !utf8.Valid(body) {
		// encoding/json would quietly turn it into U+FFFD.
		return request{}, errors.New("body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return request{}, fmt.Errorf("body is not a JSON object of attributes: %v", err)
	}
	if dec.More() {
		return request{}, errors.New("body has more than one JSON value")
	}
	var r request
	var errs []error
	need := func(name string, p *string) string {
		if p == nil {
			errs = append(errs, fmt.Errorf("attribute %s missing (auth_policy_request_attributes)", name))
			return ""
		}
		return *p
	}
	login := need("login", w.Login)
	r.PWHash = need("pwhash", w.PWHash)
	remote := need("remote", w.Remote)
	r.Service = need("protocol", w.Protocol)
	r.Session = need("session_id", w.Session)
	if w.DeviceID != nil {
		r.DeviceID = *w.DeviceID
	}
	if report {
		if w.Success == nil || w.PolicyReject == nil {
			errs = append(errs, errors.New("report without success and policy_reject"))
		} else {
			r.Success, r.PolicyReject = *w.Success, *w.PolicyReject
		}
	}
	if w.PWHash != nil && (r.PWHash == "" || len(r.PWHash) > maxHash || strings.Trim(r.PWHash, "0123456789abcdef") != "") {
		errs = append(errs, errors.New("pwhash is not 1 to 128 lower-case hex digits"))
	}
	if w.Remote != nil {
		a, err := netip.ParseAddr(remote)
		if err != nil || a.Zone() != "" {
			errs = append(errs, errors.New("remote is not an IP address"))
		}
		r.Remote = a.Unmap()
	}
	if w.Protocol != nil {
		p, ok := services[r.Service]
		if !ok {
			errs = append(errs, fmt.Errorf("protocol %q is not imap, pop3, submission or smtp", logfield.Clean(r.Service, 32)))
		}
		r.Protocol = p
	}
	if w.Session != nil && (r.Session == "" || len(r.Session) > maxSession || strings.ContainsFunc(r.Session, notPrintable)) {
		errs = append(errs, errors.New("session_id is empty, too long or not printable ASCII"))
	}
	if len(r.DeviceID) > maxDeviceID {
		r.DeviceID = r.DeviceID[:maxDeviceID]
	}
	if err := errors.Join(errs...); err != nil {
		return request{}, err
	}
	r.Login = login
	if reason := authlimit.CheckUser(login); reason != "" {
		return r, fmt.Errorf("%w: %s", errBadLogin, reason)
	}
	return r, nil
}

func notPrintable(r rune) bool { return r < 0x21 || r > 0x7e }
