"""Calyx's CNI plugin and IPAM: wires pods to their node (cali veth, /32 routes) and hands out
addresses from the node's pod CIDRs (``spec.podCIDRs`` or blocks claimed through the API)."""
