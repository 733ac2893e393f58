"""Bastion: a security-first Matrix homeserver."""

__version__ = "0.1.0"
