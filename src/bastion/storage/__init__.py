"""Storage. Handlers, services and federation talk to the store through the
:class:`~bastion.storage.interface.Store` interface only — never SQL, never a backend's types.
SQLite (WAL, :class:`~bastion.storage.sqlite.store.SqliteStore`) is the embedded default.

A second backend (PostgreSQL, say) implements :class:`~bastion.storage.interface.Store`: every
method of its per-area protocols (accounts, rooms, e2ee, media, account data, federation keys,
device lists, the federation queue, inbound federation, and the streams part), with the plain
types of :mod:`bastion.storage.interface` as results (:class:`~bastion.storage.interface.Row`
where a record is read by column name). Its :meth:`~bastion.storage.interface.Store.transaction`
runs a function in one write transaction and hands it the backend's own transaction object
(:data:`~bastion.storage.interface.Txn`), which callers only pass back to the ``…_in``/``…_sync``
methods. It keeps the one global, strictly increasing stream position (assigned inside writes,
visible through ``current_pos`` and the listeners only once committed), the wake-ups, and
:meth:`~bastion.storage.interface.Store.run_after_commit`; its schema is versioned and migrated
on ``open`` as the SQLite one is. Nothing outside ``bastion.storage`` changes; the
``_check: type[Store]`` line in ``bastion.storage.sqlite.store`` is the pattern for having the
type checker prove the new backend complete."""
