// Command etcd builds the etcd server used by envtest and `make run` from
// source, so the project never downloads prebuilt binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
