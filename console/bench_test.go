package console

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailgate/mailgate/audit"
)

// benchConsole is a console over a real audit database of n rows, all
// in the last 24 hours: 1,000 accounts, 60 countries, every third row a
// pass. It returns the handler and a signed-in viewer's cookie.
func benchConsole(b *testing.B, n int) (http.Handler, string) {
	b.Helper()
	st, err := audit.Open(audit.Config{Path: filepath.Join(b.TempDir(), "audit.db")}.WithDefaults(), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	codes := `'RU','CN','US','BR','IN','VN','ID','DE','FR','GB','NL','UA','KR','JP','TR','IR','PK','NG','EG','MX',` +
		`'AR','CO','TH','PH','BD','RO','PL','IT','ES','CA','AU','ZA','KE','MA','DZ','SA','AE','IL','KZ','BY',` +
		`'SE','NO','FI','DK','CZ','HU','BG','GR','PT','CL','PE','VE','MY','SG','HK','TW','LK','NP','ET','TZ'`
	now := time.Now().Unix()
	_, err = st.DB().Exec(`WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < ?),
		cc(i, code) AS (SELECT row_number() OVER () - 1, column1 FROM (VALUES `+valuesOf(codes)+`))
		INSERT INTO logins (account, day, addr, proto, client_id, mech, result, network, country, asn, org,
			listener, tls, cipher, sni, cause, node, first_seen, last_seen, count)
		SELECT 'user' || (x % 1000) || '@example.com', ? / 86400, '10.' || (x % 250) || '.' || (x / 250 % 250) || '.1',
			'imap', 'Thunderbird 128', 'PLAIN', CASE WHEN x % 3 = 0 THEN 'pass' ELSE 'failed' END,
			'10.0.0.0/24', (SELECT code FROM cc WHERE i = x % 60), '', '', 'imaps', 'TLS 1.3', 'TLS_AES_128_GCM_SHA256',
			'mail.example.com', '', 'node1', ? - x % 80000, ? - x % 80000, 1 + x % 7
		FROM c`, n-1, now, now, now)
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Config{UsersFile: usersFile(b), Audit: st, Overview: func() Overview { return Overview{Sessions: 1} }})
	h := srv.Handler()
	value, _, _ := srv.newSession(User{Name: "bench", Role: RoleViewer}, 0)
	benchServer = srv
	return h, value
}

// benchServer is the console of the last benchConsole, for clearing its
// cache.
var benchServer *Server

// valuesOf turns 'A','B' into ('A'),('B').
func valuesOf(list string) string {
	out := "("
	for _, c := range list {
		if c == ',' {
			out += "),("
			continue
		}
		out += string(c)
	}
	return out + ")"
}

func usersFile(b *testing.B) string {
	return filepath.Join(b.TempDir(), "none")
}

// BenchmarkPages renders each page over 100,000 audit rows of the last
// day (docs/BENCHMARKS.md, "Web console"): server time per page and its
// weight.
func BenchmarkPages(b *testing.B) {
	h, cookie := benchConsole(b, 100_000)
	for _, cold := range []bool{false, true} {
		for _, path := range []string{"/console/", "/console/countries?span=1h", "/console/countries?span=24h", "/console/countries?span=7d",
			"/console/account?user=user7%40example.com&span=7d"} {
			name := path
			if cold {
				name = "cold" + path
			}
			b.Run(name, func(b *testing.B) {
				get := func() *httptest.ResponseRecorder {
					r := httptest.NewRequest("GET", "http://127.0.0.1"+path, nil)
					r.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					return w
				}
				get() // warm: the figures cached, as for every visitor after the first
				var size int
				b.ReportAllocs()
				for b.Loop() {
					if cold {
						benchServer.mu.Lock()
						clear(benchServer.topCache)
						benchServer.mu.Unlock()
					}
					w := get()
					if w.Code != 200 {
						b.Fatalf("%s: %d", path, w.Code)
					}
					size = w.Body.Len()
				}
				b.ReportMetric(float64(size)/1024, "KiB/page")
			})
		}
	}
}
