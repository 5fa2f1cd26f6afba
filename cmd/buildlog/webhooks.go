package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"buildlog"
)

const webhooksUsage = `Usage: buildlog webhooks create [--events E,...] [--team T] URL
       buildlog webhooks ls
       buildlog webhooks deliveries [--limit N] HOOK_ID
       buildlog webhooks delete HOOK_ID

Manages webhooks through the server's API. A hook receives the events of
its team's builds as signed POSTs: build.started (the first append) and
build.finished (any end, the idle timeout's included), retried until the
receiver answers 2xx. A write key manages its own team's hooks, an admin
key any team's. The signing secret is printed once, at creation.
deliveries lists the most recent attempts, newest first.

Examples:
  buildlog webhooks create --events build.finished https://ci.example.com/buildlog
  buildlog webhooks deliveries wh_3f2a9c0d1e4b5a6f
  buildlog webhooks delete wh_3f2a9c0d1e4b5a6f

Exit status: 0 on success; 1 on an error; 2 on a usage mistake.
`

func webhooksCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, "webhooks", webhooksUsage, "create, ls, deliveries or delete",
		[]string{"create", "ls", "list", "deliveries", "delete", "rm"}, args, stderr,
		func(sub string, args []string) error { return webhooks(ctx, sub, args, env, stdout, stderr) })
}

func webhooks(ctx context.Context, sub string, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("webhooks "+sub, webhooksUsage, stderr)
	var (
		events, team string
		limit        int
		jsonOut      bool
	)
	switch sub {
	case "create":
		fs.StringVar(&events, "events", "", "comma list of `events`: build.started, build.finished (default both)")
		fs.StringVar(&team, "team", "", "the `team` whose builds the hook hears of (admin key only; default the key's team)")
	case "deliveries":
		fs.IntVar(&limit, "limit", 50, "attempts to list, 1 to 1000")
	}
	if sub != "delete" && sub != "rm" {
		fs.BoolVar(&jsonOut, "json", false, "print JSON as the API returns it")
	}
	cf := addClientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if len(pos) != 1 {
			return usageError{"webhooks create: want one URL, the http:// or https:// address to POST events to"}
		}
	case "ls", "list":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("webhooks ls takes no arguments, got %q", pos)}
		}
	default:
		if len(pos) != 1 {
			return usageError{fmt.Sprintf("webhooks %s: want one HOOK_ID", sub)}
		}
		if sub == "deliveries" && (limit < 1 || limit > 1000) {
			return usageError{"--limit: want 1 to 1000"}
		}
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}

	switch sub {
	case "create":
		var evs []string
		if events != "" {
			for _, e := range strings.Split(events, ",") {
				evs = append(evs, strings.TrimSpace(e))
			}
		}
		h, err := c.CreateWebhook(ctx, pos[0], evs, team)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSONOut(stdout, h)
		}
		fmt.Fprintf(stdout, "id:     %s\nurl:    %s\nevents: %s\nteam:   %s\nsecret: %s\n",
			h.ID, h.URL, strings.Join(h.Events, ","), h.Team, h.Secret)
		fmt.Fprintln(stderr, "buildlog: the secret is shown only now; receivers check Buildlog-Signature with it")
		return nil
	case "ls", "list":
		hs, err := c.Webhooks(ctx)
		if err != nil {
			return err
		}
		return writeList(stdout, jsonOut, "webhooks", hs, "ID\tTEAM\tEVENTS\tURL\tCREATED", func(h *buildlog.Webhook) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", h.ID, h.Team, strings.Join(h.Events, ","), h.URL, h.CreatedAt.Local().Format(listTime))
		})
	case "deliveries":
		ds, err := c.WebhookDeliveries(ctx, pos[0], limit)
		if err != nil {
			return err
		}
		return writeList(stdout, jsonOut, "deliveries", ds, "AT\tEVENT\tBUILD ID\tATTEMPT\tSTATUS\tRESULT\tTIME\tID\tERROR",
			func(d *buildlog.DeliveryAttempt) string {
				status := "-"
				if d.StatusCode != 0 {
					status = fmt.Sprint(d.StatusCode)
				}
				return fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%s\t%dms\t%s\t%s", d.At.Local().Format(listTime),
					d.Event, d.BuildID, d.Attempt, status, d.Result, d.DurationMS, d.ID, d.Error)
			})
	default: // delete
		if err := c.DeleteWebhook(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", pos[0])
		return nil
	}
}
