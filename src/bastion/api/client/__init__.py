"""The Client-Server API, one module per spec section."""
