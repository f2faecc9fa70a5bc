"""Periodic background work: escalation, auto-close, digest, attachment sweep, flood summaries."""
