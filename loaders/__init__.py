"""Loaders: contract tables in, validated and pseudonymised canonical frames out, into a store."""

from loaders.errors import (
    ConfigError,
    DataError,
    NotFoundError,
    ParameterError,
    SocialRiskError,
    StoreError,
    TransientStoreError,
)
from loaders.normalise import NORMALISATION_VERSION, EmailRule, Normalisation, normalise_identifiers
from loaders.load import LoadReport, TableSink, WriteCounts, load, read_tables
from loaders.pseudonym import key_fingerprint, new_key, parse_key, pseudonymise
from loaders.schema import TABLE_NAMES, Tables, empty_tables
from loaders.validate import DEFAULT_LABEL_MAP

__all__ = [
    "ConfigError",
    "DataError",
    "NotFoundError",
    "ParameterError",
    "SocialRiskError",
    "StoreError",
    "TransientStoreError",
    "LoadReport",
    "TableSink",
    "WriteCounts",
    "load",
    "read_tables",
    "key_fingerprint",
    "new_key",
    "parse_key",
    "pseudonymise",
    "TABLE_NAMES",
    "Tables",
    "empty_tables",
    "DEFAULT_LABEL_MAP",
    "NORMALISATION_VERSION",
    "EmailRule",
    "Normalisation",
    "normalise_identifiers",
]
