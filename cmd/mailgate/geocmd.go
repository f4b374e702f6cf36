package main

// `mailgate geo update` (cmd/mailgate/internal/geoupdate does the work).

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/geoupdate"
	"github.com/mailgate/mailgate/geo"
)

func runGeo(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "update" {
		fmt.Fprintln(stderr, "usage: mailgate geo update [-config FILE] [-file PATH]")
		return 2
	}
	fs, path := commandFlags("geo update", stderr)
	file := fs.String("file", "", "database file to replace (default geo_update.file, else the first of geo.databases)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		printErrors(stderr, *path, err)
		return 2
	}
	u := cfg.GeoUpdate
	if *file != "" {
		u.File = *file
	}
	if u.File == "" {
		for _, d := range cfg.Geo.Databases {
			if d != geo.EmbeddedName {
				u.File = d
				break
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.Timeout)
	defer cancel()
	info, err := geoupdate.Update(ctx, u, http.DefaultClient, "mailgate/"+version)
	if err != nil {
		fmt.Fprintf(stderr, "mailgate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: updated: %s\n", u.File, info)
	return 0
}
