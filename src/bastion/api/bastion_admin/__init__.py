"""Bastion's own admin API under ``/_bastion/admin/v1/`` (what Synapse's admin API lacks), one
module per area; the guard's endpoints live in :mod:`bastion.api.guard`."""
