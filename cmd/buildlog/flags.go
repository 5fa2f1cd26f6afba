package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// envFlags fills every flag not given on the command line from its
// BUILDLOG_* variable: upper case, dashes to underscores.
func envFlags(fs *flag.FlagSet, env []string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := vars[name]; ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Sprintf("%s=%q: %v", name, v, e)}
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return "BUILDLOG_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func getenv(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// durationValue is a Go duration that also takes whole days ("30d").
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("want a duration such as 500ms, 15s, 30m or 30d")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 500ms, 15s, 30m or 30d")
	}
	return d, nil
}

// sizeValue is a byte count that takes KiB/MiB/GiB suffixes ("16MiB").
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil {
		return ""
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v sizeValue) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive size in bytes, or with KiB, MiB or GiB")
	}
	*v.n = n * mult
	return nil
}

// capSizeValue is a sizeValue that also takes 0 (no cap).
type capSizeValue struct{ n *int64 }

func (v capSizeValue) String() string { return sizeValue(v).String() }

func (v capSizeValue) Set(s string) error {
	if strings.TrimSpace(s) == "0" {
		*v.n = 0
		return nil
	}
	return sizeValue(v).Set(s)
}
