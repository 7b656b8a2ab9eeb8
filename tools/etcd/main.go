// Command etcd is the etcd server, built from its Go module at the version go.mod names, for the
// control plane that Calyx's lab and tests run.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
