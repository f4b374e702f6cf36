package errlist

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	err := errors.Join(a, errors.Join(b, c))
	if got := Split(err); !slices.Equal(got, []error{a, b, c}) {
		t.Errorf("Split(join(a, join(b, c))) = %v", got)
	}
	wrapped := fmt.Errorf("policy: %w", a) // one Unwrap, not a list: stays whole
	if got := Split(wrapped); len(got) != 1 || got[0] != wrapped {
		t.Errorf("Split(wrapped) = %v", got)
	}
}
