"""X.509 for TPP certificates (eIDAS QWAC / QSealC, OB transport and signing certificates), on `cryptography`:

- `der`: a strict, bounded DER reader for what `cryptography` does not parse;
- `psd2`: the ETSI QCStatements of PSD2 certificates (roles, NCA, organizationIdentifier);
- `chain`: the configured trust anchors (`trust.certificate_authorities`) and chain validation to them, by
  purpose (transport, signing), with `cryptography.x509.verification`; its result, `ValidatedChain`, names the
  leaf and its issuer for revocation;
- `revocation`: CRL and OCSP checks of a validated chain.

It imports nothing of the gateway above jose, state, observability, addresses, config and jsonutil.
"""
