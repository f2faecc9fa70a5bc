"""The embedded engine: one SQLite file in the state directory."""
