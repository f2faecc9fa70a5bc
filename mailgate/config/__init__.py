"""mailgate.toml and the directory: loading, typed reading and cross-checking."""
