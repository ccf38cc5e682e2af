"""The router's processes and the control plane's side of them (docs/architecture.md, "The data plane").

`router/` is the engine that routes requests; this package runs it: `parent.py` (the router's parent process:
listening sockets, workers, the channel to the control plane), `worker.py` (one engine on those sockets),
`report.py` (their counts, merged without loss), `messages.py` (the channel's framing), and on the control plane's
side `table.py` (the routing state it wants), `link.py` (talking to the parent) and `plane.py` (the wiring).
"""
