package wire

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"buildlog"
)

// DecodeNewBuild parses and validates a create-build body. An empty body is
// an empty request. The build's id is left empty when none was given.
func DecodeNewBuild(body []byte) (*buildlog.NewBuild, error) {
	var nb buildlog.NewBuild
	if len(bytes.TrimSpace(body)) == 0 {
		return &nb, nil
	}
	if err := strictUnmarshal(body, &nb); err != nil {
		return nil, buildlog.Errorf(buildlog.EInvalid, "body%s", fieldProblem(err))
	}
	if nb.BuildID != nil && !buildlog.ValidID(*nb.BuildID) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "build_id: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	if nb.Namespace != nil && !buildlog.ValidID(*nb.Namespace) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "namespace: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	if nb.Name != nil && !buildlog.ValidID(*nb.Name) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "name: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	if nb.Version != nil && !buildlog.ValidVersion(*nb.Version) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "version: want semver MAJOR.MINOR.PATCH with optional -prerelease and +build, no leading v (e.g. 1.0.0)")
	}
	if (nb.Name == nil) != (nb.Version == nil) || (nb.Namespace != nil && nb.Name == nil) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "name, version: give both (and optionally namespace) or neither")
	}
	if nb.TotalSteps != nil && *nb.TotalSteps < 1 {
		return nil, buildlog.Errorf(buildlog.EInvalid, "total_steps: want an integer ≥ 1")
	}
	if nb.MaxAttempts != nil && *nb.MaxAttempts < 1 {
		return nil, buildlog.Errorf(buildlog.EInvalid, "max_attempts: want an integer ≥ 1")
	}
	if len(nb.Metadata) > 0 && string(nb.Metadata) != "null" {
		var buf bytes.Buffer
		if nb.Metadata[0] != '{' || json.Compact(&buf, nb.Metadata) != nil {
			return nil, buildlog.Errorf(buildlog.EInvalid, "metadata: want a JSON object")
		}
		nb.Metadata = buf.Bytes()
	} else {
		nb.Metadata = nil
	}
	if nb.Team != nil && !buildlog.ValidID(*nb.Team) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "team: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	for i, s := range nb.Secrets {
		if s == "" {
			return nil, buildlog.Errorf(buildlog.EInvalid, "secrets[%d]: empty", i)
		}
	}
	return &nb, nil
}

// DecodeFinish parses and validates a finish body.
func DecodeFinish(body []byte) (*buildlog.Finish, error) {
	var f buildlog.Finish
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, buildlog.Errorf(buildlog.EInvalid, `body: empty; want {"status": "ready" | "failed" | "cancelled" | "timeout"}`)
	}
	if err := strictUnmarshal(body, &f); err != nil {
		return nil, buildlog.Errorf(buildlog.EInvalid, "body%s", fieldProblem(err))
	}
	if f.Status == "" {
		return nil, buildlog.Errorf(buildlog.EInvalid, "status: required; want one of ready, failed, cancelled, timeout")
	}
	if !f.Status.Terminal() {
		return nil, buildlog.Errorf(buildlog.EInvalid, "status: want one of ready, failed, cancelled, timeout")
	}
	at := func(field, format string, args ...any) error {
		return buildlog.Errorf(buildlog.EInvalid, field+": "+format, args...)
	}
	var err error
	if f.Result, err = object(at, "result", f.Result); err != nil {
		return nil, err
	}
	if f.ResultMetadata, err = object(at, "result_metadata", f.ResultMetadata); err != nil {
		return nil, err
	}
	if f.ErrorDetail, err = object(at, "error_detail", f.ErrorDetail); err != nil {
		return nil, err
	}
	return &f, nil
}

// DecodeNewWebhook parses and validates a create-webhook body. Events left
// out mean every event type; they come back deduplicated, in EventTypes
// order. Whether the URL's host is a private address is for the caller to
// check (it needs the network).
func DecodeNewWebhook(body []byte) (*buildlog.NewWebhook, *url.URL, error) {
	var nw buildlog.NewWebhook
	if err := StrictUnmarshal(body, &nw); err != nil {
		return nil, nil, err
	}
	u, err := buildlog.ParseWebhookURL(nw.URL)
	if err != nil {
		return nil, nil, err
	}
	if nw.Events == nil {
		nw.Events = slices.Clone(buildlog.EventTypes)
	} else {
		if len(nw.Events) == 0 {
			return nil, nil, buildlog.Errorf(buildlog.EInvalid, "events: want one or more of %s", strings.Join(buildlog.EventTypes, ", "))
		}
		for i, e := range nw.Events {
			if !slices.Contains(buildlog.EventTypes, e) {
				return nil, nil, buildlog.Errorf(buildlog.EInvalid, "events[%d]: unknown event %q; want one of %s", i, clip(e), strings.Join(buildlog.EventTypes, ", "))
			}
		}
		var evs []string
		for _, e := range buildlog.EventTypes {
			if slices.Contains(nw.Events, e) {
				evs = append(evs, e)
			}
		}
		nw.Events = evs
	}
	if nw.Team != nil && !buildlog.ValidID(*nw.Team) {
		return nil, nil, buildlog.Errorf(buildlog.EInvalid, "team: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	return &nw, u, nil
}
