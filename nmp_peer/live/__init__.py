"""The real-time edges: UDP sockets (asyncio), sound devices and files on a clock, the jam peer."""
