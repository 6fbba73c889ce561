"""X.509 public-key infrastructure for TPP certificates (eIDAS QWAC / QSealC, OB transport and signing
certificates), on `cryptography`:

- `chain`: the configured trust anchors (`trust.certificate_authorities`) and chain validation to them, by
  purpose (transport, signing), with `cryptography.x509.verification`; its result, `ValidatedChain`, names
  the leaf and its issuer for revocation;
- `psd2`: PSD2 semantics of a certificate (ETSI QCStatements, roles, NCA, organizationIdentifier);
- `revocation`: CRL and OCSP checks of a validated chain.

It imports nothing of the gateway above jose, state, observability, addresses, config and jsonutil.
"""
