"""calyxctl: the operator's command line for a Calyx cluster."""
