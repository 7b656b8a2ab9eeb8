"""ExaBGP integration: configuration text (pure), the API bridge program, the supervised
process and its API channel."""
