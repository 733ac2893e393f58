"""Bastion's own admin API (``/_bastion/admin/v1/``) beside the guard's: one module per part."""
