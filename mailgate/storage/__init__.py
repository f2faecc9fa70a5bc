"""The store and its SQL: the only package that talks to the database."""
