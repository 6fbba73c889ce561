"""Which key-set URLs are trusted as written: those of the operator's config, not those of signed documents."""

from __future__ import annotations

from ..jose import UrlPolicy

# Key-set URLs written by the operator in config are trusted as given (loopback and private networks
# included); URLs taken from documents signed by others (SSAs) get a strict UrlPolicy instead.
CONFIGURED_URLS = UrlPolicy.build(allow_http=True, allow_private=True, allow_loopback=True, origin="configured")
