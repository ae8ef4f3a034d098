"""Every setting of jokebot, read from the environment and `.env` (see `.env.example`).

Imported by the bot process and by the CLI; it imports neither discord nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"

IdList = Annotated[list[int], NoDecode]
_DATABASE_URL_HELP = (
    "use postgresql://user:password@host:port/database, or leave it empty for the SQLite file"
    " in JOKEBOT_DATA_DIR"
)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it in one line."""


class Settings(BaseSettings):
    """jokebot's configuration. Environment variables win over `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    # Discord
    discord_token: SecretStr | None = None
    discord_api_base: str = DISCORD_API_BASE
    discord_gateway_url: str = DISCORD_GATEWAY_URL
    discord_guild_ids: IdList = Field(default_factory=list)
    admin_role_ids: IdList = Field(default_factory=list)
    announce_channel_id: int | None = None
    # Gateway shards: None = one plain connection; "auto" = Discord's recommended count
    discord_shard_count: int | Literal["auto"] | None = None
    discord_shard_ids: IdList = Field(default_factory=list)  # empty = every shard of the count

    # Where data lives
    data_dir: Path = Field(
        default=Path("data"), validation_alias=AliasChoices("JOKEBOT_DATA_DIR", "data_dir")
    )
    # empty: the SQLite file in JOKEBOT_DATA_DIR; postgresql://user:password@host:port/database
    # shares one database between jokebot processes on several machines
    database_url: SecretStr | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # how long a command waits for the database before it answers "try again"
    database_timeout: float = Field(default=2.0, gt=0, le=60)
    # model versions (default JOKEBOT_DATA_DIR/models); a shared volume when processes on
    # several machines share one PostgreSQL database
    versions_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("MODELS_DIR", "versions_dir")
    )
    # PostgreSQL: how often a process that does not lead the retrain schedule tries to take over
    leader_retry_seconds: float = Field(default=5.0, gt=0, le=300)

    # Model runner
    model_base: str | None = None
    runner_url: str | None = None
    runner_host: str = "127.0.0.1"
    runner_port: int = Field(default=8765, ge=0, le=65535)
    runner_token: SecretStr | None = None
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    # the runner's dtype; `auto`: timed on the CPU at the first load (model.precision)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    runner_max_queue: int = Field(default=64, ge=1)
    runner_max_batch: int = Field(default=16, ge=1)
    runner_compile: bool = False
    runner_kind: Literal["jokebot", "vllm", "sglang"] = "jokebot"
    runner_reconcile_seconds: float = Field(default=15.0, gt=0)

    # Jokes
    joke_max_tokens: int = Field(default=64, ge=8, le=512)
    joke_temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    joke_top_p: float = Field(default=DEFAULT_TOP_P, gt=0.0, le=1.0)
    few_shot_examples: int = Field(default=4, ge=0, le=8)
    starter_corpus: bool = True

    # Community guards: near-duplicates, rate limits, content policy
    near_duplicate_threshold: float = Field(default=88.0, gt=0.0, le=100.0)
    rate_joke_member: str = "10/minute"
    rate_joke_server: str = "60/minute"
    rate_addjoke_member: str = "5/minute;50/day"
    rate_addjoke_server: str = "60/minute"
    content_policy: Literal["off", "blocklist", "strict"] = "blocklist"
    content_blocklist: str = ""
    content_blocklist_file: Path | None = None

    # Retraining
    retrain_schedule: str = "0 */6 * * *"
    retrain_min_new_jokes: int = Field(default=20, ge=0)
    retrain_max_minutes: float = Field(default=10.0, gt=0)
    retrain_from: Literal["serving", "base"] = "serving"
    train_epochs: float = Field(default=1.0, gt=0)
    # 45: on the starter corpus (251 training jokes, batch 16) the held-out NLL is lowest
    # around step 30 and a 45-step run ends where a 60-step one does (3.288), 35 s sooner
    train_min_steps: int = Field(default=45, ge=0)
    train_min_jokes: int = Field(default=30, ge=2)
    train_learning_rate: float = Field(default=1e-4, gt=0)
    train_batch_size: int = Field(default=16, ge=1)
    train_grad_accum: int = Field(default=1, ge=1)
    train_lora: bool = False
    train_precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where timed faster
    train_seed: int = 42
    train_eval_samples: int = Field(default=48, ge=1)
    # data-parallel training processes (torchrun): a number, or `auto` = one per visible GPU
    train_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    promote_min_nll_gain: float = Field(default=0.01, ge=0.0, lt=1.0)
    promote_max_one_joke_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    promote_max_copy_rate: float = Field(default=0.25, ge=0.0, le=1.0)
    keep_versions: int = Field(default=3, ge=1)

    # Learning from votes: the preference phase of a training run, and the gate's vote checks
    preference_training: Literal["auto", "off"] = "auto"
    preference_min_votes: int = Field(default=50, ge=1)
    preference_beta: float = Field(default=1.0, gt=0.0)
    preference_learning_rate: float = Field(default=1e-4, gt=0.0)
    preference_epochs: float = Field(default=3.0, gt=0.0)
    preference_sft_weight: float = Field(default=1.0, ge=0.0)
    preference_loss: Literal["auto", "kto", "apo_zero_unpaired"] = "auto"
    preference_holdout: float = Field(default=0.2, gt=0.0, lt=1.0)
    preference_time_share: float = Field(default=0.3, ge=0.0, lt=1.0)
    promote_max_separation_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    promote_min_diversity: float = Field(default=0.8, ge=0.0, le=1.0)

    # Community: votes, reports, moderation
    community_min_score: int = Field(default=3, ge=1)
    reports_to_hide: int = Field(default=3, ge=1)
    moderation: Literal["off", "new", "all"] = "new"
    moderation_new_member_jokes: int = Field(default=3, ge=0)

    # Backups of the SQLite database (see README, "Backups")
    backup_schedule: str = "30 3 * * *"  # daily at 03:30 UTC; "off" disables
    backup_dir: Path | None = None  # None: JOKEBOT_DATA_DIR/backups
    backup_keep: int = Field(default=7, ge=1)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("discord_guild_ids", "admin_role_ids", "discord_shard_ids", mode="before")
    @classmethod
    def _comma_separated_ids(cls, value: object) -> object:
        """Accept `123,456` (what a person writes in .env) as well as a list."""
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        """Empty (the SQLite file) or `postgresql://user:password@host:port/database`."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str) or not value.strip():
            return None
        from urllib.parse import urlsplit

        value = value.strip()
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(_DATABASE_URL_HELP) from None
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ValueError(_DATABASE_URL_HELP)
        if not (parts.hostname or "host=" in parts.query):
            raise ValueError(f"names no host; {_DATABASE_URL_HELP}")
        return value

    @field_validator("discord_shard_count", mode="before")
    @classmethod
    def _shard_count(cls, value: object) -> object:
        """`auto`, a whole number of at least 1, or empty (one plain connection)."""
        if isinstance(value, str):
            value = value.strip().lower()
            if value in {"", "auto"}:
                return value or None
            if not value.isdigit():
                raise ValueError("use auto or a whole number of shards (at least 1)")
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError("a bot needs at least 1 shard")
        return value

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_ids_within_count(cls, value: list[int], info: ValidationInfo) -> list[int]:
        """Processes that split the shards must agree on the count: ids need a number N."""
        if not value:
            return value
        count = info.data.get("discord_shard_count")
        if not isinstance(count, int):
            raise ValueError("needs DISCORD_SHARD_COUNT set to a number (every process the same)")
        wrong = [i for i in value if not 0 <= i < count]
        if wrong:
            raise ValueError(f"shard ids must be 0 to {count - 1} for DISCORD_SHARD_COUNT={count}")
        if len(set(value)) != len(value):
            raise ValueError("a shard id is listed twice")
        return sorted(value)

    @field_validator(
        "rate_joke_member", "rate_joke_server", "rate_addjoke_member", "rate_addjoke_server"
    )
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        """`off`, or the `limits` notation: `5/minute`, `10 per 30 seconds`, `5/minute;50/day`."""
        if value.strip().lower() in {"", "off", "none"}:
            return "off"
        from limits import parse_many

        parse_many(value)  # raises ValueError naming what it could not read
        return value

    @field_validator("retrain_schedule", "backup_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if value.strip().lower() in {"", "off", "never"}:
            return "off"
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value)  # raises ValueError with the reason
        return value

    @property
    def runner_urls(self) -> list[str]:
        """RUNNER_URL split at commas: one URL per runner replica."""
        return [url.strip() for url in (self.runner_url or "").split(",") if url.strip()]

    @property
    def database_path(self) -> Path:
        """The SQLite file: the database unless DATABASE_URL names a PostgreSQL one."""
        return self.data_dir / "jokebot.sqlite3"

    @property
    def database_url_text(self) -> str:
        """DATABASE_URL in plain text; the SQLite file's URL when it is not set."""
        if self.database_url is None:
            return f"sqlite://{self.database_path.absolute()}"
        return self.database_url.get_secret_value()

    @property
    def uses_postgresql(self) -> bool:
        return self.database_url is not None

    @property
    def backup_folder(self) -> Path:
        """BACKUP_DIR, or `backups/` in the data directory."""
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def models_dir(self) -> Path:
        """Where model versions are written: MODELS_DIR, else JOKEBOT_DATA_DIR/models."""
        return self.versions_dir if self.versions_dir is not None else self.data_dir / "models"

    @property
    def base_model_ref(self) -> str:
        """Version 0: MODEL_BASE (hub id or folder) or the embedded model's converted folder."""
        if self.model_base:
            return self.model_base
        from model.embedded import embedded_model_dir  # pure path helper, no torch

        return str(embedded_model_dir(self.data_dir))

    def runner_admin_token(self) -> str | None:
        """RUNNER_TOKEN as plain text (None when unset): the bearer of the runner's admin calls."""
        return self.runner_token.get_secret_value() if self.runner_token else None

    def require_discord_token(self) -> str:
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise SettingsError(
                "DISCORD_TOKEN is not set: put your bot token in .env or the environment "
                "(see README, 'Create the Discord application')"
            )
        return self.discord_token.get_secret_value().strip()


def load_settings(**overrides: object) -> Settings:
    """Read settings; an invalid value becomes one SettingsError line that names the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        if name == "DATA_DIR":
            name = "JOKEBOT_DATA_DIR"
        if name == "VERSIONS_DIR":
            name = "MODELS_DIR"
        shown = first.get("input")
        if name == "DATABASE_URL":  # never print the password: only the kind it names
            text = str(shown.get_secret_value() if hasattr(shown, "get_secret_value") else shown)
            shown = text.split("://", 1)[0] + "://…"
        raise SettingsError(f"{name}: {first['msg']} (got {shown!r})") from None
