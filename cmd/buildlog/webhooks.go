package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

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
	if len(args) == 0 {
		fmt.Fprint(stderr, webhooksUsage)
		return exitError(exitUsage)
	}
	var err error
	switch args[0] {
	case "create", "ls", "list", "deliveries", "delete", "rm":
		err = webhooks(ctx, args[0], args[1:], env, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, webhooksUsage)
		return nil
	default:
		err = usageError{fmt.Sprintf("webhooks: unknown command %q: want create, ls, deliveries or delete", args[0])}
	}
	return done(ctx, err)
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
		if jsonOut {
			if hs == nil {
				hs = []*buildlog.Webhook{}
			}
			return writeJSONOut(stdout, map[string]any{"webhooks": hs})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTEAM\tEVENTS\tURL\tCREATED")
		for _, h := range hs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.ID, h.Team, strings.Join(h.Events, ","), h.URL,
				h.CreatedAt.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	case "deliveries":
		ds, err := c.WebhookDeliveries(ctx, pos[0], limit)
		if err != nil {
			return err
		}
		if jsonOut {
			if ds == nil {
				ds = []*buildlog.DeliveryAttempt{}
			}
			return writeJSONOut(stdout, map[string]any{"deliveries": ds})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AT\tEVENT\tBUILD ID\tATTEMPT\tSTATUS\tRESULT\tTIME\tID\tERROR")
		for _, d := range ds {
			status := "-"
			if d.StatusCode != 0 {
				status = fmt.Sprint(d.StatusCode)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%dms\t%s\t%s\n", d.At.Local().Format("2006-01-02 15:04:05"),
				d.Event, d.BuildID, d.Attempt, status, d.Result, d.DurationMS, d.ID, d.Error)
		}
		return tw.Flush()
	default: // delete
		if err := c.DeleteWebhook(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", pos[0])
		return nil
	}
}
