"""What the gateway tells its operators: `logging` configures structlog (JSON lines, secret masking),
`metrics` defines every Prometheus metric with its stable name (multiprocess-aware for `serve --workers`),
and `audit` writes the hash-chained decision log and verifies it (`dcr-gateway audit verify`). It imports
nothing of the gateway but `jsonutil`, so every layer above may report through it.
"""
