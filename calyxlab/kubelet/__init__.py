"""The lab's kubelet: runs the hostNetwork pods the API binds to a lab node (the calyx
DaemonSet's), as kubelet does for a real node.

One process per cluster node (``python -m calyxlab.kubelet --lab LAB --node NODE``), talking
to the API with the node's own credentials (``system:node:NODE``). For each hostNetwork pod
bound to its node it runs the init containers in order, then the containers, each as a
process of the project's virtualenv inside the node (its network namespace, with the pod's
volumes mounted at their mount paths in a private mount namespace), with the pod's
environment (downward API included) and its projected ServiceAccount token. It probes them,
restarts them with kubelet's back-off, reports the pod's status, renews the node's Lease and
finishes pods being deleted.

What it does not do: pull images (the image is the virtualenv), enforce securityContext,
seccomp or resource limits, or run pods with their own network namespace (the lab's pod
commands make those, :mod:`calyxlab.pods`).

Modules: :mod:`.podspec` (Pod object -> what to run, pure), :mod:`.status` (runtime state ->
Pod status, pure), :mod:`.backoff` (restart back-off, pure), :mod:`.volumes` (materialising
volumes), :mod:`.runtime` (container processes), :mod:`.records` (what runs, on disk),
:mod:`.node` (the sync loop).
"""
