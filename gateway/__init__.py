"""Envoy gateway: descriptor build, config rendering and process control."""
