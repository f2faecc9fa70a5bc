"""Mail coming in: the IMAP watcher, the SMTP/LMTP listener and the per-message pipeline."""
