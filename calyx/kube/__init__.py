"""Calyx's Kubernetes datastore layer, shared by felix, bgpd and the CNI plugin.

``client`` builds API clients, ``resources`` names the kinds Calyx uses and offers generic
list/watch/get/create/patch/delete over them, ``reflector`` keeps one resource's cache in step
with the API, ``datastore`` turns the caches into a parsed ``calyx.model.Snapshot``, and
``events`` records Kubernetes Events. See docs/datastore.md.
"""
