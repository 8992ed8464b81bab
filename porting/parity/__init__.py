"""Parity: comparing port outputs with golden tensors, and the pytest plugin."""
