"""The HTTP transport: knows HTTP, not Powerwalls.

An HTTP/1.1 server on our own standard-library selector loop with a small worker pool:
framing, keep-alive, admission, streams (SSE and WebSocket through wsproto), TLS. It calls
an app (`types.App`: Request -> Response) and knows nothing else; it may import the
standard library, wsproto and `proxy.ratelog` (a standard-library leaf: its log lines a
client can cause are rate-limited like every other part's), never another proxy package.
"""
