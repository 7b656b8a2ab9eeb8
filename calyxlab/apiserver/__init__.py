"""An in-memory Kubernetes API server emulator for the lab and the tests: core v1 kinds and
CRD-defined kinds, discovery, OpenAPI, list/watch with resourceVersions and bookmarks, patches,
finalizers and the status subresource, served over plain HTTP with aiohttp.

``EmbeddedAPIServer`` runs it on a background thread; ``write_kubeconfig`` points clients at it;
``python -m calyxlab.apiserver`` runs it as a process.
"""
from calyxlab.apiserver.kubeconfig import write_kubeconfig
from calyxlab.apiserver.runner import EmbeddedAPIServer

__all__ = ["EmbeddedAPIServer", "write_kubeconfig"]
