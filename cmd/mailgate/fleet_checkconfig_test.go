package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// check-config prints one line on whether guard.shared's store answers;
// a store that does not is no error (serve starts without it), a hash
// key file that cannot be read is.
func TestCheckConfigSharedStoreLine(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "hash-key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := miniredis.RunT(t)
	check := func(addr, keyFile string) (int, string, string) {
		cfgPath := filepath.Join(dir, "mailgate.yaml")
		yaml := "hostname: mail.example.test\nlisteners: [{name: imap, protocol: imap, address: \"127.0.0.1:0\", tls: none}]\ntls: {self_signed: true}\n" +
			"guard: {shared: {addresses: [\"" + addr + "\"], hash_key_file: \"" + keyFile + "\", timeout: 200ms}}\n"
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := check(m.Addr(), key); code != 0 || !strings.Contains(out, "guard.shared: store answers ("+m.Addr()+")") {
		t.Errorf("store up: code %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	addr := m.Addr()
	m.Close()
	if code, out, errOut := check(addr, key); code != 0 || !strings.Contains(out, "guard.shared: store does not answer ("+addr+")") {
		t.Errorf("store down: code %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code, _, errOut := check(addr, filepath.Join(dir, "missing")); code == 0 || !strings.Contains(errOut, "guard.shared.hash_key_file") {
		t.Errorf("missing hash key file: code %d, stderr:\n%s", code, errOut)
	}
}
