package plugin

import (
	"errors"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// printError prints err as kubectl does: an object the API server found
// invalid as "The Kind "name" is invalid: field: message" (one cause per
// line when there are several), another refusal of the API server as
// "Error from server (Reason): message", anything else as "error: message".
func printError(w io.Writer, err error) {
	fmt.Fprintln(w, strings.TrimRight(errorMessage(err), "\n"))
}

func errorMessage(err error) string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return "error: " + clean(err.Error())
	}
	st := status.Status()
	if apierrors.IsInvalid(err) && st.Details != nil {
		what := "The request is invalid"
		if st.Details.Kind != "" || st.Details.Name != "" {
			what = fmt.Sprintf("The %s %q is invalid", st.Details.Kind, st.Details.Name)
		}
		var causes []string
		for _, c := range st.Details.Causes {
			if c.Field != "" {
				causes = append(causes, clean(c.Field+": "+c.Message))
			} else {
				causes = append(causes, clean(c.Message))
			}
		}
		switch len(causes) {
		case 0:
			return what
		case 1:
			return what + ": " + causes[0]
		}
		return what + ": \n* " + strings.Join(causes, "\n* ")
	}
	if st.Reason != "" {
		return fmt.Sprintf("Error from server (%s): %s", st.Reason, clean(err.Error()))
	}
	return "Error from server: " + clean(err.Error())
}
