"""Storage. Handlers and services talk to a :class:`~bastion.storage.sqlite.store.SqliteStore`
through its methods only — never SQL. SQLite (WAL) is the embedded default."""
