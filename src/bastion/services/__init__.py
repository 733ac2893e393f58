"""Services: the homeserver's logic between the HTTP handlers and the store."""
