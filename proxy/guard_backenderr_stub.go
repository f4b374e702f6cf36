package proxy

// guardBackendError counts an attempt that ended in a backend error
// against its source. Stub until the guard's version in guard.go lands;
// drop this file then.
func (c *conn) guardBackendError(user string) {}
