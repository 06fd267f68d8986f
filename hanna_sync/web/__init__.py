"""The web server: a read-only JSON API over the archive (`hanna-sync serve`)."""
