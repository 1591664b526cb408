package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// outputFlag is -o for the commands that print tables: "" (a table),
// wide, json or yaml.
type outputFlag struct{ format string }

func (f *outputFlag) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.format, "output", "o", "", "Output format: wide, json or yaml (default: a table).")
}

func (f *outputFlag) validate() error {
	switch f.format {
	case "", "wide", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,wide,yaml", f.format)
}

func (f *outputFlag) wide() bool { return f.format == "wide" }

// structured prints v as JSON or YAML when -o asks for it, and reports
// whether it did.
func (f *outputFlag) structured(w io.Writer, v any) (bool, error) {
	switch f.format {
	case "json":
		data, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return true, fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return true, err
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return true, fmt.Errorf("encoding YAML: %w", err)
		}
		_, err = w.Write(data)
		return true, err
	}
	return false, nil
}

// table prints rows under a header, aligned as kubectl aligns them.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "<none>"
			}
			cells[i] = clean(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// timeString is t in RFC 3339, or "never".
func timeString(t *metav1.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// age is how long ago t was, as kubectl prints ages.
func age(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return shortDuration(now.Sub(t.Time)) + " ago"
}

func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
