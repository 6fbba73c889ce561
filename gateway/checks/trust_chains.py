"""What the checks that validate certificate chains share: choosing the configured anchor sets a policy names
(a load-time error when one is unknown or for another purpose), the validated transport chain as a fact, and
the refusals of each `gateway.pki.chain.ChainCode`, one registered reason each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ..pki.chain import AnchorSet, ChainCode, Purpose, ValidatedChain
from ..reasons import Reason, Reasons
from .facts import Fact
from .params import ParamError
from .services import Services

CLIENT_CERT_CHAIN: Final[Fact[ValidatedChain]] = Fact(
    "client_cert_chain", ValidatedChain, audit={"cert_anchors": lambda chain: chain.anchors})
"""Fact: the transport certificate's chain, validated by `client_certificate` (`anchors`): leaf … root, with
`.leaf` and `.issuer` for a revocation check; the decision event names the anchor set (`cert_anchors`)."""

_METADATA: Final = "invalid_client_metadata"


def select_anchors(services: Services, names: Sequence[str], purpose: Purpose, param: str) -> tuple[AnchorSet, ...]:
    """The configured sets `names` (a check parameter, `param`); ParamError naming the entry that is not a set of
    `trust.certificate_authorities` for `purpose`."""
    anchors = services.chains.anchors
    chosen: list[AnchorSet] = []
    for i, name in enumerate(names):
        try:
            chosen.extend(anchors.select([name], purpose))
        except ValueError as exc:
            raise ParamError([param, i], str(exc)) from None
    return tuple(chosen)


class ClientCertChainReasons(Reasons):
    """The transport certificate's chain refused (`client_certificate` `anchors`): answered with the check's
    `status` and `error`, as the certificate's other refusals."""

    client_cert_chain_unknown_issuer = Reason(400, _METADATA, configurable="status, error")
    """No path from the certificate to a root of the named anchor sets."""
    client_cert_chain_expired = Reason(400, _METADATA, configurable="status, error")
    """A certificate of the path (an intermediate, the root) is out of date at now ± `trust.clock_skew_seconds`."""
    client_cert_chain_not_ca = Reason(400, _METADATA, configurable="status, error")
    """An issuing certificate of the path is not a CA (basicConstraints cA, keyUsage keyCertSign)."""
    client_cert_chain_leaf_is_ca = Reason(400, _METADATA, configurable="status, error")
    client_cert_chain_wrong_eku = Reason(400, _METADATA, configurable="status, error")
    """extendedKeyUsage without clientAuth (or none), or an issuing CA's EKU excluding it."""
    client_cert_chain_wrong_key_usage = Reason(400, _METADATA, configurable="status, error")
    client_cert_chain_invalid = Reason(400, _METADATA, configurable="status, error")
    """Anything else path validation refuses (weak key or algorithm, unknown critical extension, path length)."""


class SigningKeyChainReasons(Reasons):
    """The `x5c` of the TPP key that signed the registration request refused (`registration_request`
    `x5c_anchors`): 400 invalid_client_metadata."""

    signing_key_x5c_missing = Reason(400, _METADATA)
    """`x5c_required` and the key carries no `x5c`."""
    signing_key_x5c_unknown_issuer = Reason(400, _METADATA)
    signing_key_x5c_expired = Reason(400, _METADATA)
    signing_key_x5c_not_ca = Reason(400, _METADATA)
    signing_key_x5c_leaf_is_ca = Reason(400, _METADATA)
    signing_key_x5c_wrong_key_usage = Reason(400, _METADATA)
    """keyUsage without digitalSignature or nonRepudiation."""
    signing_key_x5c_invalid = Reason(400, _METADATA)


C = ClientCertChainReasons
S = SigningKeyChainReasons

CLIENT_CERT_CHAIN_REFUSALS: Final[Mapping[ChainCode, Reason]] = {
    "unknown_issuer": C.client_cert_chain_unknown_issuer, "expired": C.client_cert_chain_expired,
    "not_ca": C.client_cert_chain_not_ca, "leaf_is_ca": C.client_cert_chain_leaf_is_ca,
    "wrong_eku": C.client_cert_chain_wrong_eku, "wrong_key_usage": C.client_cert_chain_wrong_key_usage,
    "invalid": C.client_cert_chain_invalid,
}
"""The reason for each ChainCode of the transport certificate."""
SIGNING_KEY_CHAIN_REFUSALS: Final[Mapping[ChainCode, Reason]] = {
    "unknown_issuer": S.signing_key_x5c_unknown_issuer, "expired": S.signing_key_x5c_expired,
    "not_ca": S.signing_key_x5c_not_ca, "leaf_is_ca": S.signing_key_x5c_leaf_is_ca,
    "wrong_key_usage": S.signing_key_x5c_wrong_key_usage, "invalid": S.signing_key_x5c_invalid,
    # The signing purpose constrains no extendedKeyUsage (gateway/pki/chain.py PURPOSE_RULES): never reported.
    "wrong_eku": S.signing_key_x5c_invalid,
}
"""The reason for each ChainCode of a signing key's `x5c`."""
