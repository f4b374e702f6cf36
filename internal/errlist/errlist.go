// Package errlist splits the error trees errors.Join builds, so that a
// config, policy or reload failure is printed one problem a line. It is a
// leaf under internal/ at the module root so that cmd/mailgate, its admin
// listener and policy share one copy.
package errlist

// Split flattens err, an errors.Join result possibly holding others, into
// its leaves in order; any other error is returned alone.
func Split(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Split(e)...)
		}
		return out
	}
	return []error{err}
}
