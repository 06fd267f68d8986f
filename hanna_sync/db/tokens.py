"""The web server's API tokens: created and revoked by the CLI, checked by the server on every request.

Only a token's sha256 is stored; the token itself is printed once, by `hanna-sync token create`.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from hanna_sync.db.connection import Connection, utcnow
from hanna_sync.errors import InputError, NotFound


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenQueries(Connection):
    def create_token(self, name: str, *, admin: bool = False) -> str:
        """A new token named `name`; the token itself (only its hash is kept)."""
        if not name.strip() or len(name) > 100:
            raise InputError("a token's NAME is 1 to 100 characters, e.g. crm or anna-laptop")
        token = secrets.token_urlsafe(32)
        with self.transaction():
            if self.db.execute("SELECT 1 FROM web_tokens WHERE name = ?", [name]).fetchone():
                raise InputError(f"a token named '{name}' exists already: revoke it first, or choose another name")
            self.db.execute("INSERT INTO web_tokens (name, token_sha256, admin, created_at) VALUES (?, ?, ?, ?)",
                            [name, token_hash(token), int(admin), utcnow()])
        return token

    def tokens(self) -> list[dict[str, Any]]:
        """Every token's name, admin flag, created and last used times (never the token or its hash)."""
        return [{"name": r["name"], "admin": bool(r["admin"]), "created_at": r["created_at"],
                 "last_used_at": r["last_used_at"]}
                for r in self.db.query("SELECT * FROM web_tokens ORDER BY name")]

    def revoke_token(self, name: str) -> None:
        with self.transaction():
            if not self.db.execute("DELETE FROM web_tokens WHERE name = ?", [name]).rowcount:
                raise NotFound(f"no token named '{name}'; 'hanna-sync token list' shows them")

    def token_owner(self, token: str) -> dict[str, Any] | None:
        """The name and admin flag of the token, None when it is unknown or revoked."""
        row = self.db.execute("SELECT name, admin FROM web_tokens WHERE token_sha256 = ?",
                              [token_hash(token)]).fetchone()
        return None if row is None else {"name": row[0], "admin": bool(row[1])}

    def token_used(self, name: str, *, wait_ms: int = 200) -> None:
        """Note the token's use, waiting at most `wait_ms` for a pass's write lock (then sqlite3's
        "database is locked"). On the web server's query_only connection the flag is lifted for this
        one statement: its own connection, because opening another one to a database that has gone
        would create an empty one in its place."""
        query_only = self.db.execute("PRAGMA query_only").fetchone()[0]
        busy = self.db.execute("PRAGMA busy_timeout").fetchone()[0]
        self.db.execute("PRAGMA query_only = OFF")
        self.db.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
        try:
            self.db.execute("UPDATE web_tokens SET last_used_at = ? WHERE name = ?", [utcnow(), name])
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy)}")
            self.db.execute(f"PRAGMA query_only = {int(query_only)}")
