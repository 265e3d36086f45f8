"""The real-time edges: the UDP transport (asyncio), sound devices and files on a clock,
and the jam peer that joins them to the receive core."""
