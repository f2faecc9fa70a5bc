"""Decisions: what a mail does to tickets and the conversation rules."""
