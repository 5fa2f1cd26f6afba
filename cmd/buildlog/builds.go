package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"buildlog"
	"buildlog/client"
)

const buildsUsage = `Usage: buildlog builds ls [flags]
       buildlog builds get [flags] BUILD_ID

ls lists builds, newest first, one page at a time; get shows one build.

Examples:
  buildlog builds ls --template base-image --status failed
  buildlog builds get --json tb_123 | jq .status

Exit status: 0 on success; 1 on an error; 2 on a usage mistake.
`

func buildsCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, "builds", buildsUsage, "ls or get", []string{"ls", "list", "get", "show"}, args, stderr,
		func(sub string, args []string) error {
			if sub == "ls" || sub == "list" {
				return buildsLs(ctx, args, env, stdout, stderr)
			}
			return buildsGet(ctx, args, env, stdout, stderr)
		})
}

func buildsLs(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("builds ls", buildsUsage, stderr)
	var (
		f       client.BuildFilter
		status  string
		jsonOut bool
	)
	fs.StringVar(&f.TemplateID, "template", "", "only builds of this template `id`")
	fs.StringVar(&status, "status", "", "only builds in this `status`: queued, building, ready, failed, cancelled, timeout")
	fs.IntVar(&f.Limit, "limit", 50, "builds per page, 1 to 1000")
	fs.StringVar(&f.Cursor, "cursor", "", "continue a listing from the `cursor` a previous page printed")
	fs.BoolVar(&jsonOut, "json", false, `print the page as JSON: {"builds":[...],"next_cursor":"..."}`)
	cf := addClientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Sprintf("builds ls takes no arguments, got %q", pos)}
	}
	if status != "" {
		f.Status = buildlog.Status(status)
		if !f.Status.Valid() {
			return usageError{fmt.Sprintf("--status %q: want queued, building, ready, failed, cancelled or timeout", status)}
		}
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	page, err := c.Builds(ctx, f)
	if err != nil {
		return err
	}
	if jsonOut {
		return writeJSONOut(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUILD ID\tTEMPLATE\tSTATUS\tCREATED\tDURATION\tENTRIES")
	now := time.Now()
	for _, b := range page.Builds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", b.ID, b.TemplateID, b.Status,
			b.CreatedAt.Local().Format(listTime), shortDuration(client.Duration(b, now)), b.NextOffset)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(stderr, "more: buildlog builds ls --cursor %s\n", page.NextCursor)
	}
	return nil
}

func buildsGet(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("builds get", buildsUsage, stderr)
	var jsonOut bool
	fs.BoolVar(&jsonOut, "json", false, "print the build as the API returns it")
	cf := addClientFlags(fs)
	id, err := parseOneArg(fs, args, "builds get: want one BUILD_ID")
	if err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	b, err := c.Build(ctx, id)
	if err != nil {
		return err
	}
	if jsonOut {
		return writeJSONOut(stdout, b)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	ts := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Local().Format(time.RFC3339)
	}
	row("build", b.ID)
	row("template", b.TemplateID)
	if b.Name != "" {
		row("version", b.Namespace+"/"+b.Name+"/"+b.Version)
	}
	row("team", b.Team)
	row("status", string(b.Status))
	row("created", ts(&b.CreatedAt))
	row("started", ts(b.StartedAt))
	row("finished", ts(b.FinishedAt))
	row("duration", shortDuration(client.Duration(b, time.Now())))
	row("entries", fmt.Sprint(b.NextOffset))
	row("result", strings.TrimSpace(string(b.Result)))
	return tw.Flush()
}

func writeJSONOut(w io.Writer, v any) error {
	// Not HTML-escaped: "<key>" in a message stays readable.
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
