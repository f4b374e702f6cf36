package backend

import (
	"context"
	"net"
)

// ProbeDovecotAuth connects to Dovecot's auth socket at addr (a
// dovecot_auth value) and reads its handshake up to DONE, as a password
// check would, but asks nothing: /readyz and check-config use it. nil
// means the auth service answers as Dovecot's and offers PLAIN; ctx
// bounds it.
func ProbeDovecotAuth(ctx context.Context, addr string) error {
	network, address, err := DovecotAuthNetwork(addr)
	if err != nil {
		return err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return err
	}
	o := Options{Address: addr}.withDefaults()
	cn := newConn(ctx, nc, o, "dovecot-auth", o.Logger)
	defer cn.close()
	return dovecotHandshake(cn)
}
