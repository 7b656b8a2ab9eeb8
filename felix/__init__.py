"""felix, the Calyx node agent: pod routes, node-block blackholes and the IPIP device."""
