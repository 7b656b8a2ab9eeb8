"""felix's dataplane managers: each compares the desired state with the kernel's and writes
only the difference, through :mod:`calyx.netlink`."""
