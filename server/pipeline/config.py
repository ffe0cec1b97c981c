"""Per-session configuration: what background to show and how to compute the mask."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.names import MODEL_CHOICES_TEXT

if TYPE_CHECKING:  # not at run time: the command line's help reads this module, and the zoo imports torch
    from models.zoo import ModelRegistry

    from .backgrounds import BackgroundStore

Mode = Literal["blur", "image", "color", "none", "mask"]
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class SubjectPoint(BaseModel):
    """A point on the frame, as fractions of its width and height from the top left: the person there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: float = Field(ge=0.0, le=1.0, description="from the left edge, 0..1")
    y: float = Field(ge=0.0, le=1.0, description="from the top edge, 0..1")


Subject = Literal["all", "main"] | SubjectPoint


class SessionConfig(BaseModel):
    """One session's settings; every field has a default, unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    mode: Mode = Field("blur", description="background: blur, image, color, none (passthrough) or mask (debug view)")
    blur: float = Field(0.5, ge=0.0, le=1.0, description="blur strength, 0..1 (sigma = blur x frame height / 20)")
    color: str = Field("#00b140", description="background colour for mode=color, '#rrggbb'")
    image: str = Field("aurora", description="background image for mode=image: an uploaded id or a preset name")
    model: str = Field(
        "general", description=f"segmentation model: {MODEL_CHOICES_TEXT}, or a loaded checkpoint's name"
    )
    smoothing: float = Field(0.9, ge=0.0, le=1.0, description="temporal smoothing of the mask, 0 = off .. 1")
    refine: bool = Field(True, description="edge-aware upsampling of the mask guided by the frame")
    region: bool = Field(
        True, description="follow the person and segment a crop around them (people far from the camera)"
    )
    motion: bool = Field(
        True, description="move the previous mask along the optical flow before smoothing (no trailing in motion)"
    )
    light_wrap: float = Field(
        0.0, ge=0.0, le=1.0, description="spill of the background onto the person's edge, 0 = off"
    )
    subject: Subject = Field(
        "all",
        description="who stays: all (everyone), main (one person, the largest near the centre, then followed) "
        "or {x, y} (the person at that point, 0..1 from the top left, then followed; 'x,y' in a query string)",
    )

    @field_validator("subject", mode="before")
    @classmethod
    def _read_point(cls, value: object) -> object:
        """A point written "x,y" (a query string, the command line) as {x, y}."""
        if isinstance(value, str) and "," in value:
            x, _, y = value.partition(",")
            try:
                return {"x": float(x), "y": float(y)}
            except ValueError:
                raise ValueError("a point is written 'x,y', two numbers from 0 to 1") from None
        return value

    keyframes: int = Field(
        5,
        ge=0,
        le=30,
        description="run the model at most every N frames while the optical flow explains the mask's motion "
        "(the last mask moved along it in between), 0 = every frame",
    )
    edges: bool = Field(
        True, description="clean edges: the person's own colour at the soft edge of the mask, no old background in it"
    )

    @field_validator("color")
    @classmethod
    def _check_color(cls, value: str) -> str:
        if not _HEX_COLOR.match(value):
            raise ValueError("must be a colour written '#rrggbb'")
        return value.lower()

    def rgb(self) -> tuple[int, int, int]:
        """The `color` field as an (r, g, b) tuple of 0..255."""
        return tuple(int(self.color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    def updated(self, changes: dict) -> SessionConfig:
        """A validated copy with `changes` applied; the other fields keep their values."""
        return SessionConfig.model_validate({**self.model_dump(), **changes})


class ConfigError(ValueError):
    """A config (change) that cannot be applied: `field` names the key at fault; `malformed` when the
    change is not even a mapping of fields."""

    def __init__(self, message: str, field: str | None = None, malformed: bool = False) -> None:
        super().__init__(message)
        self.message, self.field, self.malformed = message, field, malformed


def first_error(exc: ValidationError, prefix: str) -> tuple[str, str | None]:
    """The first field a pydantic model refused, as a message and its name under `prefix`."""
    error = exc.errors()[0]
    name = ".".join(str(p) for p in error["loc"])
    field = f"{prefix}.{name}" if prefix and name else (name or prefix or None)
    return f"{name or prefix or 'body'}: {error['msg']}", field


def validate_config(
    base: SessionConfig, changes: object, backgrounds: BackgroundStore, registry: ModelRegistry
) -> SessionConfig:
    """`base` updated with `changes`, or ConfigError naming the first bad field (as `config.<field>`)."""
    if not isinstance(changes, dict):
        raise ConfigError("config must be a JSON object", "config", malformed=True)
    try:
        config = base.updated(changes)
    except ValidationError as exc:
        raise ConfigError(*first_error(exc, "config")) from None
    try:
        registry.plan(config.model)  # resolved now, and kept for the session's frames (ModelRegistry.plan)
    except KeyError as exc:
        raise ConfigError(f"model: {exc.args[0]}", "config.model") from None
    if config.image not in backgrounds:
        raise ConfigError(f"image: no background named {config.image!r}", "config.image")
    return config
