package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/sqlite"
)

const keysUsage = `Usage: buildlog keys create --team T --scopes read,write [--name N]
       buildlog keys ls
       buildlog keys revoke KEY_ID

Manages API keys, through the server's admin API (with an admin key), or
with --data DIR straight on the embedded store in DIR, offline: use that
to make the first keys before a server runs, or to recover when every
admin key is lost. A key's secret is printed once, at creation; only its
hash is stored. Revoking takes effect at once.

Examples:
  buildlog keys create --team acme --scopes read,write --name ci
  buildlog keys create --data ./buildlog-data --team default --scopes admin
  buildlog keys revoke key_3f2a9c0d1e4b5a6f

Exit status: 0 on success; 1 on an error; 2 on a usage mistake.
`

// keyAdmin is where keys are managed: the API, or a store opened directly.
type keyAdmin interface {
	create(ctx context.Context, team string, scopes []buildlog.Scope, name string) (*client.NewKey, error)
	list(ctx context.Context) ([]*buildlog.Key, error)
	revoke(ctx context.Context, id string) error
	close()
}

func keysCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, "keys", keysUsage, "create, ls or revoke", []string{"create", "ls", "list", "revoke", "rm"}, args, stderr,
		func(sub string, args []string) error { return keys(ctx, sub, args, env, stdout, stderr) })
}

func keys(ctx context.Context, sub string, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys "+sub, keysUsage, stderr)
	var team, scopes, name, data string
	var jsonOut bool
	if sub == "create" {
		fs.StringVar(&team, "team", "", "the `team` the key acts for (required)")
		fs.StringVar(&scopes, "scopes", "", "comma list of `scopes`: read, write, admin (required)")
		fs.StringVar(&name, "name", "", "a `label` for the key, e.g. ci")
	}
	if sub != "revoke" && sub != "rm" {
		fs.BoolVar(&jsonOut, "json", false, "print JSON")
	}
	fs.StringVar(&data, "data", "", "work offline on the embedded store in `DIR` instead of through the server")
	cf := addClientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	var admin keyAdmin
	if data != "" {
		st, err := sqlite.Open(ctx, data)
		if err != nil {
			return err
		}
		admin = storeKeys{st}
	} else {
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		admin = apiKeys{c}
	}
	defer admin.close()

	switch sub {
	case "create":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("keys create takes no arguments, got %q", pos)}
		}
		if team == "" || scopes == "" {
			return usageError{"keys create: --team and --scopes are required"}
		}
		sc, err := buildlog.ParseScopes(strings.Split(scopes, ","))
		if err != nil {
			return usageError{"--scopes: want a comma list of read, write, admin"}
		}
		k, err := admin.create(ctx, team, sc, name)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSONOut(stdout, k)
		}
		fmt.Fprintf(stdout, "id:     %s\nteam:   %s\nscopes: %s\nname:   %s\nkey:    %s\n", k.ID, k.Team, scopeList(k.Scopes), k.Name, k.Key)
		fmt.Fprintln(stderr, "buildlog: the key is shown only now; store it safely")
		return nil
	case "ls", "list":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("keys ls takes no arguments, got %q", pos)}
		}
		ks, err := admin.list(ctx)
		if err != nil {
			return err
		}
		return writeList(stdout, jsonOut, "keys", ks, "ID\tTEAM\tSCOPES\tNAME\tCREATED", func(k *buildlog.Key) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", k.ID, k.Team, scopeList(k.Scopes), k.Name, k.CreatedAt.Local().Format(listTime))
		})
	default: // revoke
		if len(pos) != 1 {
			return usageError{"keys revoke: want one KEY_ID"}
		}
		if err := admin.revoke(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", pos[0])
		return nil
	}
}

func scopeList(ss []buildlog.Scope) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ",")
}

type apiKeys struct{ c *client.Client }

func (a apiKeys) create(ctx context.Context, team string, scopes []buildlog.Scope, name string) (*client.NewKey, error) {
	return a.c.CreateKey(ctx, team, scopes, name)
}
func (a apiKeys) list(ctx context.Context) ([]*buildlog.Key, error) { return a.c.Keys(ctx) }
func (a apiKeys) revoke(ctx context.Context, id string) error       { return a.c.RevokeKey(ctx, id) }
func (a apiKeys) close()                                            {}

// storeKeys manages keys on a store opened directly, by the same rules as
// the admin API (internal/httpapi/keys.go).
type storeKeys struct{ st buildlog.Store }

func (s storeKeys) create(ctx context.Context, team string, scopes []buildlog.Scope, name string) (*client.NewKey, error) {
	if !buildlog.ValidID(team) {
		return nil, buildlog.Errorf(buildlog.EInvalid, "--team: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	if len(name) > 128 {
		return nil, buildlog.Errorf(buildlog.EInvalid, "--name: at most 128 bytes")
	}
	secret, id := buildlog.NewKeySecret()
	k := &buildlog.Key{ID: id, Team: team, Scopes: scopes, Name: name,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond), Hash: buildlog.HashKey(secret)}
	if err := s.st.CreateKey(ctx, k); err != nil {
		return nil, err
	}
	return &client.NewKey{ID: k.ID, Key: secret, Team: k.Team, Scopes: k.Scopes, Name: k.Name, CreatedAt: k.CreatedAt}, nil
}

func (s storeKeys) list(ctx context.Context) ([]*buildlog.Key, error) { return s.st.Keys(ctx) }

func (s storeKeys) revoke(ctx context.Context, id string) error {
	if err := s.st.DeleteKey(ctx, id); err != nil {
		if buildlog.ErrorCode(err) == buildlog.ENotFound {
			return buildlog.Errorf(buildlog.ENotFound, "key %s not found", id)
		}
		return err
	}
	return nil
}

func (s storeKeys) close() { s.st.Close() }
