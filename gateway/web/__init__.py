"""HTTP plumbing shared by the API (`gateway/api/`) and the panel (`gateway/admin/`).

Both front ends are served by one aiohttp application; what guards the connection and
the request before either of them sees it lives here, below both, so neither imports
the other: security headers (`headers`), who the client is behind a trusted proxy
(`client`), the request checks on Host and path (`guard`), the connection layer
with its timeouts, connection caps and parser-error answers (`connections`), the
gateway and JSON answers every handler uses (`context`), and how times look
(`formats`). The app that mounts both front ends is composed in `gateway/http_app.py`.
"""
