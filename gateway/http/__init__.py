"""The HTTP side: everything between a socket and the policy engine's decision.

`server` is the public listener's own HTTP/1.1 server (llhttp) and `listener` every listener's connection limits
(header and keep-alive timeouts, connections per client, what the HTTP parser refuses) and runner; `inbound`
states the framing rule and header hygiene; `app` builds the public and
admin apps and runs their lifecycle; `handler` is the public listener's one entry, which hands each
request to the engine and applies its decision; `proxy` buffers the body and relays; `upstream` is
the pooled HTTP/1.1 client for the one backend; `context` is the per-request context (which peers are
trusted proxies, and who the client behind them is, is `gateway.addresses`: the certificate check needs
it too). This package asks the engine
(`gateway.policy`, its public surface only) for a decision and knows no check and no fact in
particular: the decision carries what to forward, what to add to the response and what to audit.
"""
