"""Bastion's own admin API under ``/_bastion/admin/v1/`` (issue 10), beside the guard's."""
