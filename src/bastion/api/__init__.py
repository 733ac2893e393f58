"""HTTP APIs: thin handlers over the services and the store."""
