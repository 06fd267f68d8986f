"""The SQLite archive: schema and migrations, and the queries the floors above need, grouped by concern."""
