"""Reading what X.509 certificates say beyond what `cryptography` parses: a strict, bounded DER reader
(`der`) and the ETSI QCStatements of PSD2 certificates (`psd2`). No trust decisions: chain validation and
revocation are not made here."""
