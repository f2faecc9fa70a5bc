"""The shared engine: PostgreSQL, for several mailgate nodes on one database."""
