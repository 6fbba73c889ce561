"""X.509 for TPP certificates (eIDAS QWAC / QSealC, OB transport and signing certificates), beyond what
`cryptography` parses and beside `gateway.certificates`:

- `der`: a strict, bounded DER reader;
- `psd2`: the ETSI QCStatements of PSD2 certificates (QWAC / QSealC, roles, NCA);
- `chain`: the configured trust anchors (`trust.certificate_authorities`) and chain validation to them, by
  purpose (transport, signing), with `cryptography.x509.verification`; its result, `ValidatedChain`, names the
  leaf and its issuer, and `ChainValidator.issuer_of` is the `revocation.IssuerLookup`;
- `revocation`: is a certificate revoked? OCSP (RFC 6960) and CRLs (RFC 5280), fetched behind the SSRF guard,
  believed only when signed by the certificate's validated issuer.

It may import jose, state, observability, addresses, config and jsonutil; never checks, policy, http or the
sandbox.
"""
