"""The campaign pages' data: campaigns with their devices, and the accuracy-vs-measurements curve.

Read-only. The curve is drawn server-side as SVG coordinates (no script needed: the page's CSP allows
none inline), one point per scored round — x the training configs measured, y the held-out share within
±10 % — with the target as a horizontal line.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.campaigns.models import Campaign, CampaignRound
from service.devices.models import Device

#: The plot area inside the SVG's viewBox, in its units.
WIDTH, HEIGHT, MARGIN = 560, 240, 40


@dataclass(frozen=True)
class CurvePoint:
    """A scored round on the curve: its values and where the SVG draws it."""

    round: int
    configs: int
    within_10: float
    x: float
    y: float


@dataclass(frozen=True)
class Curve:
    """The accuracy curve of a campaign as SVG geometry."""

    points: list[CurvePoint]
    target_y: float
    x_max: int
    width: int = WIDTH
    height: int = HEIGHT
    margin: int = MARGIN

    @property
    def polyline(self) -> str:
        """The `points` attribute of the SVG polyline."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def _y(share: float) -> float:
    return MARGIN + (1.0 - share) * (HEIGHT - 2 * MARGIN)


def accuracy_curve(rounds: list[CampaignRound], target: float) -> Curve:
    """Held-out share within ±10 % against training configs measured, for the scored rounds."""
    scored = [r for r in rounds if r.within_10 is not None]
    x_max = max([r.configs_measured for r in rounds] + [1])
    points = [
        CurvePoint(
            round=r.number,
            configs=r.configs_measured,
            within_10=float(r.within_10 or 0.0),
            x=MARGIN + r.configs_measured / x_max * (WIDTH - 2 * MARGIN),
            y=_y(float(r.within_10 or 0.0)),
        )
        for r in scored
    ]
    return Curve(points=points, target_y=_y(target), x_max=x_max)


def campaigns_with_devices(session: Session, limit: int = 200) -> list[tuple[Campaign, str]]:
    """The newest campaigns, each with its device's name (or serial)."""
    rows = session.execute(
        select(Campaign, Device.name, Device.serial)
        .join(Device, Device.id == Campaign.device_id)
        .order_by(Campaign.id.desc())
        .limit(limit)
    ).all()
    return [(campaign, name or serial) for campaign, name, serial in rows]
