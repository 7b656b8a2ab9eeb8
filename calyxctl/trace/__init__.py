"""``calyxctl trace``: the path of a packet between pods, hop by hop, from each node's real
forwarding state, and where and why it breaks."""
