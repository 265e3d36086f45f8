"""The receive core: jitter buffer, latency policy, drift reader, playout engine, counters. Sans-IO:
time is passed in, no sockets, no asyncio."""
