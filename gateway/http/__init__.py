"""The HTTP side: everything between a socket and the policy engine's decision.

`listener` owns connections (header and keep-alive timeouts, connections per client, what the HTTP
parser refuses); `inbound` states the framing rule and header hygiene; `server` builds the public and
admin apps and their lifecycle and hands each request to the engine; `proxy` buffers the body and
relays; `upstream` is the pooled HTTP/1.1 client for the one backend; `addresses` says which peers are
trusted proxies and who the client behind them is; `context` is the per-request context. This package
asks the engine (`gateway.policy`) for a decision and knows no check in particular.
"""
