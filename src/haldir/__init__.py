"""Haldir: a governance layer for AI agents."""

from haldir.client import AsyncHaldirClient, HaldirClient
from haldir.core.checkpoints import Checkpoint, CheckpointError, Verifier, parse_checkpoint
from haldir.core.export import ExportReport, verify_export
from haldir.core.merkle import ProofError, verify_consistency, verify_inclusion
from haldir.errors import (
    BudgetExceeded,
    Conflict,
    HaldirError,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidAmount,
    InvalidApiKey,
    InvalidRequest,
    InvalidScope,
    LedgerTampered,
    NotFound,
    PayloadTooLarge,
    ScopeDenied,
    ServerUnavailable,
    StoreUnavailable,
    Unauthenticated,
    VaultSealed,
    VaultTampered,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncHaldirClient",
    "BudgetExceeded",
    "Checkpoint",
    "CheckpointError",
    "Conflict",
    "ExportReport",
    "HaldirClient",
    "HaldirError",
    "IdempotencyKeyReused",
    "InsufficientScope",
    "InvalidAmount",
    "InvalidApiKey",
    "InvalidRequest",
    "InvalidScope",
    "LedgerTampered",
    "NotFound",
    "PayloadTooLarge",
    "ProofError",
    "ScopeDenied",
    "ServerUnavailable",
    "StoreUnavailable",
    "Unauthenticated",
    "VaultSealed",
    "VaultTampered",
    "Verifier",
    "__version__",
    "parse_checkpoint",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
]
