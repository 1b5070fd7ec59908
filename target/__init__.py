"""The reference ad server and its backpressure primitives."""
