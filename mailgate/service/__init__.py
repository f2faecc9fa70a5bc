"""The daemon: wiring, reload, metrics, systemd notify, start checks and logging."""
