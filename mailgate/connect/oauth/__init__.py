"""OAuth2 for IMAP and SMTP logins (SASL XOAUTH2 / OAUTHBEARER).

profile  the [oauth.NAME] settings (pure)
tokens   the refresh-token file of the generic flow: 0600, rotated atomically
http     token endpoint requests over mailgate's own TLS settings (urllib)
sources  where an access token comes from: a refresh token, Microsoft Entra app-only
         (msal), a Google service account (google-auth), a token_command
sasl     the SASL strings and the IMAP/SMTP AUTHENTICATE calls
login    `mailgate oauth login`: the first refresh token (device code or pasted code)
"""
