"""The FITS layer: IRAC FITS files -> plain data (header cards and values, product kinds, pixel arrays). No SQL.

- :mod:`iracdb.fitsio.header`: a primary header's cards and values, parsed from the raw bytes (no astropy).
- :mod:`iracdb.fitsio.products`: what ingest catalogues of an IRAC Level-1 file (:func:`read_irac_file`).
- :mod:`iracdb.fitsio.image`: what reduction measures (:func:`iracdb.fitsio.image.read_image`: header and pixels).

The header and product names are importable from here; :mod:`iracdb.fitsio.image` (numpy and the photometry's
header facts) is imported on its own, so that the catalogue side (ingest, ``db/``) stays light.
"""

from iracdb.fitsio.header import (
    BLOCK_BYTES,
    CARD_BYTES,
    SIGNATURE,
    HeaderCards,
    check_signature,
    data_bytes,
    find_end_card,
    is_subarray,
    n_planes,
    parse_value,
    read_header_bytes,
    split_header,
)
from iracdb.fitsio.products import (
    AOR_COLUMNS,
    EXPOSURE_COLUMNS,
    EXPOSURE_KEYWORDS,
    IDENTITY_KEYWORDS,
    INGEST_KEYWORDS,
    KINDS,
    SCIENCE_KINDS,
    UNCERTAINTY_KIND,
    FileRecord,
    ReadFile,
    Rejection,
    not_regular,
    product_kind,
    read_and_hash,
    read_irac_file,
    record_of,
)

__all__ = [
    "AOR_COLUMNS",
    "BLOCK_BYTES",
    "CARD_BYTES",
    "EXPOSURE_COLUMNS",
    "EXPOSURE_KEYWORDS",
    "IDENTITY_KEYWORDS",
    "INGEST_KEYWORDS",
    "KINDS",
    "SCIENCE_KINDS",
    "SIGNATURE",
    "UNCERTAINTY_KIND",
    "FileRecord",
    "HeaderCards",
    "ReadFile",
    "Rejection",
    "check_signature",
    "data_bytes",
    "find_end_card",
    "is_subarray",
    "n_planes",
    "not_regular",
    "parse_value",
    "product_kind",
    "read_and_hash",
    "read_header_bytes",
    "read_irac_file",
    "record_of",
    "split_header",
]
