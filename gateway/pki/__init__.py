"""X.509 public-key infrastructure for TPP certificates (issue 16), on `cryptography`:

- `revocation`: is a certificate revoked? OCSP (RFC 6960) and CRLs (RFC 5280), fetched behind the SSRF guard;
- `chain`: trust anchors and certificate-path validation;
- `psd2`: eIDAS QWAC / QSealC semantics (ETSI TS 119 495 QCStatements, PSD2 roles, DN forms).

It sits beside `gateway.certificates` in the layers: it may import jose, state, observability, addresses, config
and jsonutil, never checks, policy, http or the sandbox.
"""
