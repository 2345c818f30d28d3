"""Avro schemas of Portal Pulse events, alerts and dead letters, and their codecs."""
