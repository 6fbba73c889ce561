"""X.509 for TPP certificates, beyond what `cryptography` parses and beside `gateway.certificates`:

- `der`: a strict, bounded DER reader;
- `psd2`: the ETSI QCStatements of PSD2 certificates (QWAC / QSealC, roles, NCA);
- `revocation`: is a certificate revoked? OCSP (RFC 6960) and CRLs (RFC 5280), fetched behind the SSRF guard,
  believed only when signed by the certificate's validated issuer;
- chain validation (trust anchors) comes beside them.

It may import jose, state, observability, addresses, config and jsonutil; never checks, policy, http or the
sandbox.
"""
