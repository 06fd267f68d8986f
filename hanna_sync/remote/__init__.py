"""Talking to mail servers: IMAP, Microsoft Graph and sign-in, SMTP, and the provider presets.

Each module is one transport; none knows about the archive's tables."""
