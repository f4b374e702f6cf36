package backend

import "testing"

func TestTLSModeValid(t *testing.T) {
	for m, want := range map[TLSMode]bool{
		TLSNone: true, TLSImplicit: true, TLSStartTLS: true,
		"": false, "Implicit": false, "tls": false, "ssl": false,
	} {
		if got := m.Valid(); got != want {
			t.Errorf("TLSMode(%q).Valid() = %v, want %v", m, got, want)
		}
	}
}
