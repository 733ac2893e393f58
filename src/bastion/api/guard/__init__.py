"""The guard's admin API (/_bastion/admin/v1/guard/...), one module per part."""
