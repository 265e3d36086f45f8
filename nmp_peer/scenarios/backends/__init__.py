"""Where a scenario's two peers and relay run: network namespaces, containers."""
