"""Settings: every flag of the commands, each with its BACKDROP_* environment variable, read in this one place.

Order of precedence: a flag given on the command line, then the environment variable, then the default.
`backdrop serve` has one flag per ServerSettings field, in the fields' order (see `flag`): a new setting is a
new flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.names import MODEL_CHOICES_TEXT

# Lists come from the environment comma-separated (BACKDROP_PRELOAD=general,landscape), not as JSON.
CommaList = Annotated[list[str], NoDecode]
CommaPaths = Annotated[list[Path], NoDecode]


@dataclass(frozen=True)
class Flag:
    """A setting's command-line flag where it is not the field's name (a repeatable flag names one item)."""

    name: str


def flag(name: str, field: FieldInfo) -> str:
    """The command-line flag of the setting `name`: its `Flag`, else `--` and the name with dashes."""
    named = [item.name for item in field.metadata if isinstance(item, Flag)]
    return named[0] if named else "--" + name.replace("_", "-")


class DeviceSettings(BaseSettings):
    """Where and how the models run; every command that runs a model reads these."""

    model_config = SettingsConfigDict(env_prefix="BACKDROP_", extra="forbid")

    device: str | None = Field(
        None, description="torch device, e.g. cpu or cuda:0 (default: cuda when available, else cpu)"
    )
    fp16: bool | None = Field(None, description="fp16 model inference (default: on for CUDA, off for CPU)")
    compile: bool | None = Field(
        None,
        description="CPU only: torch.compile each PyTorch model (a trained checkpoint; the built-in segmenters run "
        "in LiteRT) as it loads (10-30 s, on a thread of its own; the server "
        "waits for the --preload ones before it listens; needs a C++ compiler, else the model runs eager with a "
        "warning), then run it 2x+ faster",
    )


class ServerSettings(DeviceSettings):
    """Everything `backdrop serve` needs."""

    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on")
    cert: Path | None = Field(
        None, description="TLS certificate (PEM); browsers need HTTPS for the camera except on localhost"
    )
    key: Path | None = Field(None, description="TLS private key (PEM) for --cert")
    ice_servers: Annotated[CommaList, Flag("--ice-server")] = Field(
        default_factory=list, description="STUN/TURN URL offered to peers, repeatable (env: comma-separated)"
    )
    ice_username: str | None = Field(None, description="username for the TURN servers")
    ice_credential: str | None = Field(None, description="credential for the TURN servers")
    max_sessions: int = Field(8, ge=1, description="concurrent sessions; more are refused with 503")
    media_timeout: float = Field(10.0, gt=0, description="seconds without video before a session is closed")
    connect_timeout: float = Field(
        20.0, gt=0, description="seconds for ICE/DTLS to connect before a session is closed as failed"
    )
    max_offer_bytes: int = Field(256 * 1024, ge=1024, description="largest accepted offer body (413 above)")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="largest accepted background upload (413 above)"
    )
    max_upload_pixels: int = Field(
        4096 * 4096, ge=1, description="largest accepted background image, in pixels (413 above)"
    )
    max_batch: int = Field(16, ge=1, description="most frames segmented in one batch across sessions")
    workers: int = Field(
        0, ge=0, description="pipeline threads; 0: one per core on a CPU (torch single-threaded in each), one on CUDA"
    )
    cores: int = Field(
        0,
        ge=0,
        description="cores this process's pipeline uses on a CPU (workers and torch threads); 0: every core it may "
        "run on; --processes gives each process its share",
    )
    preload: CommaList = Field(
        default_factory=lambda: ["general"], description="models loaded at start-up, repeatable (env: comma-separated)"
    )
    models: Annotated[CommaPaths, Flag("--model")] = Field(
        default_factory=list,
        description="trained checkpoint (.pt) or exported .onnx to serve beside the built-in models, selectable by "
        "its name; repeatable (env: comma-separated)",
    )
    default_model: str = Field(
        "general",
        description=f"model of sessions that do not choose one: {MODEL_CHOICES_TEXT} or a --model's name",
    )
    upload_budget_mb: int = Field(
        256,
        ge=1,
        description="memory for uploaded backgrounds, MiB; least recently used ones no session shows go first",
    )
    max_background_side: int = Field(
        1920, ge=64, description="uploads are kept with their longer side at most this many pixels"
    )
    operator_token: SecretStr | None = Field(
        None, description="bearer token for the operators' listings (GET /sessions, uploads); without one they are off"
    )
    tokens: Annotated[CommaList, Flag("--token")] = Field(
        default_factory=list,
        description="bearer token that creating, changing or ending a session needs (WHIP), repeatable (env: "
        "comma-separated); none: anyone may",
    )
    max_players: int = Field(8, ge=1, description="WHEP players per session; more are refused with 503")
    codec: Literal["vp8", "h264"] = Field(
        "vp8",
        description="video codec the answers put first (a peer that offers only the other gets that): vp8 or h264",
    )
    max_bitrate: int = Field(
        2000,
        ge=100,
        le=50_000,
        description="kb/s: each video sent back starts here (unless --start-bitrate) and follows the receiver's "
        "estimate and the loss it reports below it",
    )
    start_bitrate: int | None = Field(
        None,
        ge=100,
        le=50_000,
        description="kb/s each video sent back starts at, if lower than --max-bitrate: on links that may be narrow "
        "(mobile), a start that does not overfill them; the receiver's estimate and the loss it reports move it",
    )
    vp8_speed: int = Field(
        6,
        ge=4,
        le=16,
        description="libvpx's real-time encoding speed for VP8 sent back: 4 (best pictures) to 16 (least CPU); "
        "aiortc's is 6",
    )
    vp8_qmin: int = Field(
        10,
        ge=0,
        le=56,
        description="the finest quantizer VP8's rate control may use, 0-56 (aiortc's: 2): an easy picture (a "
        "talking head on a plain or blurred background) is sent with fewer bits rather than sharper than the eye "
        "can tell (46-49 dB PSNR at 10, 0.35-0.65x the kb/s); busy pictures never reach it",
    )
    vp8_speed_max: int | None = Field(
        None,
        ge=4,
        le=16,
        description="the fastest VP8 speed the encoders go to while this process's cores cannot keep up with its "
        "sessions (frames dropped, cores busy), back to --vp8-speed once they can, e.g. 10; none: the speed "
        "stays fixed",
    )
    h264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "veryfast",
        description="x264's speed preset for H.264 sent back (to peers that offer only H.264, or with --codec "
        "h264): ultrafast (least CPU) to medium (aiortc's: 3.0-3.7x veryfast's CPU, for -0.2 to +0.5 dB)",
    )
    fec: bool = Field(
        True,
        description="forward error correction (ULPFEC in RED) both ways where the peer offers it (browsers do): "
        "FEC packets after each frame, as many as the loss the receiver reports calls for, none on a clean link",
    )
    drain_timeout: float = Field(
        30.0,
        ge=0,
        description="seconds a SIGTERM waits for live sessions to end (new offers get 503) before closing them; "
        "a second SIGTERM stops at once",
    )
    processes: int = Field(
        1,
        ge=0,
        le=64,
        description="server processes on this machine behind HAProxy (`backdrop proxy-config`); 0: one per 4 cores "
        "on a CPU, one per 2 cores on CUDA",
    )
    proxy: Literal["none", "haproxy"] = Field(
        "none",
        description="with --processes above 1: haproxy runs HAProxy in front of them on --host:--port (it must be "
        "installed); none leaves that to you (`backdrop proxy-config`)",
    )
    route_prefix: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="path before /sessions and /view in the URLs this process hands out (e.g. /w/2), for a proxy "
        "that routes a session's requests to the process holding it and strips it; set by --processes",
    )
    agent_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port answering HAProxy's agent-check with this process's free capacity (weight %%, "
        "'drain' while draining); set by --processes",
    )
    compile: bool | None = Field(True, description=DeviceSettings.model_fields["compile"].description)

    @field_validator("ice_servers", "preload", "models", "tokens", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _cert_needs_key(self) -> ServerSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        if self.start_bitrate is not None and self.start_bitrate > self.max_bitrate:
            raise ValueError(f"--start-bitrate {self.start_bitrate} is above --max-bitrate {self.max_bitrate}")
        return self


def env_name(field: str) -> str:
    return f"BACKDROP_{field.upper()}"
