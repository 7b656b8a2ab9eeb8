//go:build tools

// Package tools pins the Kubernetes control-plane commands that Calyx's lab and tests run, so that
// `go mod tidy` keeps their dependencies and `go build k8s.io/kubernetes/cmd/...` builds them at the
// release named in go.mod.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
