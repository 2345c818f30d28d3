"""Faust plumbing: the app, its topics and agents. Domain logic lives in portal_pulse.domain."""
