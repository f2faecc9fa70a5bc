"""The connections mailgate opens: TLS, OAuth2 logins and what a failure means."""
