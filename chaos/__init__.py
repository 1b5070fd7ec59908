"""Chaos: the embedded Toxiproxy-compatible server, the client wrapper and the fault catalog."""
