"""The federation shell: outbound client, server-name resolver, keyring and TLS (S-S API)."""
