"""Anomaly settings over HTTP: the tenant's threshold for the built-in burst detector, or the detector off."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from haldir.core.anomalies import AnomalySettings
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/audit/anomaly-settings", tags=["audit"], responses=ERROR_RESPONSES)


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    burst_enabled: StrictBool = Field(default=True, description="False turns the burst detector off.")
    burst_max_actions: StrictInt | None = Field(
        default=None, description="Flag a session's entries beyond this many per window (default 60)."
    )
    burst_window_seconds: StrictInt | None = Field(
        default=None, description="The burst detector's window, in seconds (default 20)."
    )


class SettingsOut(BaseModel):
    burst_enabled: bool
    burst_max_actions: int | None = Field(description="Null while the burst detector is off.")
    burst_window_seconds: int

    @classmethod
    def of(cls, settings: AnomalySettings) -> SettingsOut:
        return cls(
            burst_enabled=settings.burst_max_actions is not None,
            burst_max_actions=settings.burst_max_actions,
            burst_window_seconds=settings.burst_window_seconds,
        )


@router.get("", response_model=SettingsOut)
async def get_settings(gov: GovernorDep, who: PrincipalDep) -> SettingsOut:
    """The tenant's settings of the built-in anomaly detectors (the defaults until it sets its own)."""
    return SettingsOut.of(await gov.rules.anomaly_settings(who))


@router.put("", response_model=SettingsOut)
async def put_settings(body: SettingsIn, gov: GovernorDep, who: PrincipalDep) -> SettingsOut:
    """Replace the settings (fields left out take the defaults); every process judges new entries by
    them from its next append."""
    return SettingsOut.of(await gov.rules.set_anomaly_settings(who, body.model_dump(exclude_none=True)))
