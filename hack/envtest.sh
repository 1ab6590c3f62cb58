#!/usr/bin/env bash
# Builds kube-apiserver and etcd for envtest from source through the Go module
# proxy and caches them by version. Prints the directory to use as
# KUBEBUILDER_ASSETS. A no-op when the cache already holds both binaries, and
# when KUBEBUILDER_ASSETS is already set (then that directory is printed).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
	echo "${KUBEBUILDER_ASSETS}"
	exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/paytoview/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}

build() { # build <module dir> <binary name>
	local dir=$1 name=$2
	[[ -x "${cache}/${name}" ]] && return 0
	echo "building ${name} from source into ${cache} (first run only, several minutes)..." >&2
	mkdir -p "${cache}"
	(cd "${here}/envtest/${dir}" &&
		CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "${cache}/${name}.tmp" .)
	mv "${cache}/${name}.tmp" "${cache}/${name}"
}

build etcd etcd
build kube-apiserver kube-apiserver
echo "${cache}"
