// Package tlsconf builds the *tls.Config each listener uses: certificate
// files chosen by SNI and reloaded when they change, or ACME (autocert);
// TLS 1.2 minimum; ALPN restricted to the listener's protocol (ALPACA).
// It also builds TLS configs for backends on other hosts.
//
// tlsconf imports no other mailgate package; proxy never imports tlsconf.
package tlsconf
