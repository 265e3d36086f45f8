"""Simulated networks: loss models and impairments (sans-IO), and the two harnesses that
put them between real UDP sockets: the loopback (two peers in one process) and the
impairment relay (between two processes, hosts or namespaces)."""
