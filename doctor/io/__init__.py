"""Readers that never execute or fully load what they read: safetensors headers, pickle opcode
scans, streaming JSON."""
