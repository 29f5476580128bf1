"""Helpers shared by every layer of the package: devices, seeds, tensor conversion, threads."""
