"""Synapse-compatible admin API (/_synapse/admin/...), one module per Synapse admin API page."""
