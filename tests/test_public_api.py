"""The public surface is pinned: changing it must be a deliberate edit here."""

from __future__ import annotations

import haldir
from haldir.errors import HaldirError, error_classes


def test_exported_members_are_pinned() -> None:
    assert sorted(haldir.__all__) == [
        "ApprovalDenied",
        "ApprovalRequired",
        "ArgumentRejected",
        "AsyncHaldirClient",
        "BudgetExceeded",
        "CallDenied",
        "Checkpoint",
        "CheckpointError",
        "Conflict",
        "EvidenceTampered",
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
        "NotAllowed",
        "NotFound",
        "OutboundRefused",
        "OutsideTimeWindow",
        "PayloadTooLarge",
        "ProofError",
        "QuotaExceeded",
        "RateLimited",
        "ScopeDenied",
        "ServerUnavailable",
        "StdioNotAllowed",
        "StoreUnavailable",
        "ToolDefinitionChanged",
        "ToolDenied",
        "Unauthenticated",
        "UpstreamUnavailable",
        "VaultSealed",
        "VaultTampered",
        "Verifier",
        "__version__",
        "parse_checkpoint",
        "verify_consistency",
        "verify_evidence",
        "verify_export",
        "verify_inclusion",
    ]
    for name in haldir.__all__:
        assert hasattr(haldir, name)


def test_every_error_code_is_unique_and_maps_back_to_its_class() -> None:
    classes = error_classes()
    seen: dict[str, type[HaldirError]] = {}
    pending: list[type[HaldirError]] = [HaldirError]
    while pending:
        cls = pending.pop()
        assert cls.code not in seen or seen[cls.code] is cls, f"{cls.code} is used twice"
        seen[cls.code] = cls
        pending.extend(cls.__subclasses__())
    assert classes == seen
    for code, cls in classes.items():
        assert code.islower()
        assert " " not in code
        # A request held for approval was accepted for a person's review, not failed: 202, the one
        # error that is not a 4xx or 5xx (nothing ran, and the caller must act on it).
        assert 400 <= cls.http_status <= 599 or (code, cls.http_status) == ("approval_required", 202)
        assert cls.exit_code > 0
