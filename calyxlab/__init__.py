"""calyx-lab: containerlab topologies built from network namespaces (optionally inside
user-mode Linux), with an embedded Kubernetes API; see docs/lab.md."""
