"""Response bodies of the inspection service (they also document the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Tile(BaseModel):
    """One tile of the tested image."""

    y: int = Field(description="top row of the tile in the tested image, px")
    x: int = Field(description="left column of the tile in the tested image, px")
    h: int = Field(description="tile height, px")
    w: int = Field(description="tile width, px")
    score: float = Field(description="the model's score of the tile against its reference tile (see score_name)")
    defective: bool = Field(description="score > threshold, or a flagging detection (see detected)")
    detected: bool = Field(
        default=False,
        description="a detection at the service's --flag-detections confidence or more has at least half of its "
        "box in the tile, which makes it defective",
    )


class DetectionOut(BaseModel):
    """A typed defect box of the service's detector (none without one)."""

    box: list[float] = Field(
        description="x1, y1, x2, y2 in tested-image pixels (x2, y2 exclusive), to 0.1 px", min_length=4, max_length=4
    )
    type: str = Field(description="DeepPCB defect type: open, short, mousebite, spur, spurious_copper, pin_hole")
    code: int = Field(description="DeepPCB defect code, 1..6 in the order of the types above")
    confidence: float = Field(description="the detector's confidence, in [0, 1]")


class ShiftOut(BaseModel):
    """Registration of the tested image onto the reference."""

    dy: int = Field(description="rows the tested content sits below the reference's")
    dx: int = Field(description="columns the tested content sits right of the reference's")
    score: float = Field(description="correlation of the aligned images over their overlap, in [0, 1]")


class Size(BaseModel):
    """Image size."""

    height: int
    width: int


class InspectionSummary(BaseModel):
    """An inspection without its tiles (what the listing returns)."""

    id: str = Field(description="uuid4 of the inspection")
    created_at: datetime = Field(description="when the inspection was recorded, UTC")
    verdict: Literal["defective", "pass"]
    defective: bool = Field(description="True when any tile is defective")
    threshold: float = Field(description="the model's calibrated threshold on the tile score")
    max_score: float = Field(description="largest tile score")
    score_name: str = Field(description="what the scores are: 'L2 distance' (paper's mode) or 'defect score (logit)'")
    shift: ShiftOut
    size: Size = Field(description="size of the tested image")
    tile_count: int
    defective_tiles: int = Field(description="number of tiles above the threshold")
    seconds: float = Field(description="server time spent decoding and inspecting (queueing excluded)")
    tested_sha256: str = Field(description="SHA-256 of the uploaded tested file")
    reference_sha256: str | None = Field(description="SHA-256 of the uploaded template file, if one was sent")
    board: str | None = Field(description="registered board used as reference, if no template was sent")
    tested_filename: str | None
    reference_filename: str | None
    model_id: str = Field(description="SHA-256 of the model bundle file")
    overlay_url: str | None = Field(description="URL of the overlay PNG, null when the image was not stored")


class InspectionOut(InspectionSummary):
    """A whole inspection."""

    tiles: list[Tile]
    detections: list[DetectionOut] = Field(
        default_factory=list,
        description="typed defect boxes, highest confidence first, when the service runs a detector "
        "(`pcbsiam serve --detector`); they do not change the verdict, which is the tiles'",
    )


class InspectionPage(BaseModel):
    """A page of inspections, newest first."""

    items: list[InspectionSummary]
    total: int = Field(description="inspections matching the filters")
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last page")


class Board(BaseModel):
    """A registered standard board."""

    name: str
    height: int
    width: int


class Boards(BaseModel):
    """Registered standard boards."""

    boards: list[Board]


class Health(BaseModel):
    """Liveness and readiness."""

    status: Literal["ok"]
    model_id: str
    boards: int = Field(description="number of registered boards")
    pending: int = Field(description="inspections running or queued now")
    capacity: int = Field(description="running plus queued inspections allowed before 503")


class HealthDown(Health):
    """Not ready: the database cannot be written now (read-only, disk full, unreachable)."""

    status: Literal["unavailable"]  # type: ignore[assignment]
    detail: str = Field(description="why, in one sentence")


class ErrorOut(BaseModel):
    """Every error: one sentence."""

    detail: str


def record_out(row: dict[str, Any], tiles: bool = True) -> dict[str, Any]:
    """The API body of a stored row (see :mod:`pcbsiam.serve.db`)."""
    out = {key: row[key] for key in InspectionSummary.model_fields if key in row}
    out["shift"] = {"dy": row["shift_dy"], "dx": row["shift_dx"], "score": row["shift_score"]}
    out["size"] = {"height": row["height"], "width": row["width"]}
    out["overlay_url"] = f"/v1/inspections/{row['id']}/overlay.png" if row.get("has_image") else None
    if tiles:
        out["tiles"] = row["tiles"]
        out["detections"] = row.get("detections") or []
    return out
