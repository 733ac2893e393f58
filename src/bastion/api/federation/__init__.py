"""Server-Server API handlers, one module per spec section, each with ``register(router, hs)``.

These routes live on the federation router, served only by the federation listener (HTTPS).
On an ``auth=True`` route the request was authenticated with ``X-Matrix`` before the handler
runs, and ``req.requester`` is the **origin server name** (a ``str``), not a user.
"""
