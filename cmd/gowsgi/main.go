// Command gowsgi serves a Python WSGI application: gowsgi [flags] MODULE[:CALLABLE].
package main

import (
	"os"

	"gowsgi/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
