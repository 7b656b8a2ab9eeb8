"""BFD (RFC 5880/5881) for bgpd's sessions, run by FRR's bfdd and driven through its control socket."""
