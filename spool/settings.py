"""The one settings object, read from the environment and an optional ``.env``.

Built once in each program's ``main()`` and passed down; nothing below
``main()`` reads ``os.environ``.  Variables (DESIGN section 7):

``SPOOL_DIR``, ``JOB_NUM``, ``SPOOL_EXECUTOR``, ``SPOOL_FSYNC``,
``SPOOL_TOOLS``, ``SPOOL_PRELOAD_TOOLS``, ``SPOOL_PRELOAD_QUANT``, ``SPOOL_DATA_DIR``,
``SPOOL_MAX_JOB_BYTES``, ``SPOOL_SETTLE_S``, ``SPOOL_SCAN_S``, ``SPOOL_GRACE_S``,
``SPOOL_WORKER_MAX_JOBS``, ``SPOOL_WORKER_MEMORY_MB``, ``SPOOL_FAST_THREADS``,
``SPOOL_LOG_LEVEL``,
``STATUSD_HOST``, ``STATUSD_PORT``, ``STATUSD_TOKEN``,
``STATUSD_MAX_BODY_BYTES``, ``STATUSD_ALLOWED_ORIGINS``.

The ``.env`` of the working directory is read only when one ``stat`` finds a
regular file (or a symlink to one) of at most 1 MiB: a FIFO there (which
pydantic-settings would read, and wait on for a writer for ever), a socket or
a device is refused with a ConfigError naming it, so no program hangs on its
settings.  A directory named ``.env`` (a virtualenv, say) is no settings file
and is passed over, as pydantic-settings does.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import logging
import os
import pwd
import re
import stat
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from spool.cpus import available_cpus
from spool.durability import FsyncMode
from spool.errors import ConfigError
from spool.text import comma_list

__all__ = ["ENV_FILE", "MAX_ENV_FILE_BYTES", "MAX_SECONDS", "FsyncMode", "Settings", "env_file",
           "load_settings"]  # FsyncMode: re-exported, its home before spool.durability

MAX_SECONDS = 86_400.0
DEFAULT_STATUSD_HOST = "127.0.0.1"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


ENV_FILE = ".env"
ENV_FILE_ENCODING = "utf-8-sig"
"""UTF-8, a byte order mark first read past (PowerShell 5's ``Out-File -Encoding utf8``,
Notepad's "UTF-8 with BOM"), as a job file's is: read as plain UTF-8 its first variable
was named "\ufeffSPOOL_DIR", no setting, and dropped without a word, so every program
used the default spool, ``~/.local/state/spoolq`` (QA h401)."""
MAX_ENV_FILE_BYTES = 1_048_576
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"))


def env_file() -> Path | None:
    """The working directory's ``.env`` if it is a settings file, from one ``stat``
    (following a symlink; it never blocks).

    None when there is none, or it is a directory (a virtualenv named ``.env``).
    ConfigError for a FIFO (pydantic-settings would read it, waiting for a writer for
    ever), a socket or a device (``/dev/zero`` never ends), more than
    :data:`MAX_ENV_FILE_BYTES`, or one neither this user's nor root's: run in a shared
    folder, another user's ``.env`` chose the spool ``init --system`` hands to the spool
    user, or the ``SPOOL_TOOLS`` modules a processor imports (QA).
    """
    path = Path(ENV_FILE)
    try:
        st = os.stat(path)
    except OSError:  # none (or a dangling symlink): no .env
        return None
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "something else")
        raise ConfigError(f"cannot read {path}: it is {kind}, not a regular file; "
                          "remove it or run from another directory")
    if st.st_size > MAX_ENV_FILE_BYTES:
        raise ConfigError(f"cannot read {path}: larger than {MAX_ENV_FILE_BYTES} bytes")
    trusted = {os.geteuid(), 0}
    if os.geteuid() == 0 and (sudo := os.environ.get("SUDO_UID", "")).isdigit():
        trusted.add(int(sudo))  # `sudo spoolq init --system` from one's own checkout
    owners = {path.resolve(): st.st_uid}
    with contextlib.suppress(OSError):
        owners[path.absolute()] = os.lstat(path).st_uid  # a symlink's to it, too
    for named, owner in owners.items():
        if owner not in trusted:
            raise ConfigError(f"not reading {named}: it belongs to uid {owner}, neither "
                              "this user nor root, and would choose the spool and the tools "
                              "this command uses; remove it or run from another directory")
    return path


def _default_spool_dir() -> Path:
    """``~/.local/state/spoolq``; ConfigError when this user has no home to put it in.

    With HOME unset and no passwd entry for the uid (a container run as an arbitrary
    user) ``expanduser`` raises RuntimeError: spoolq said "unexpected RuntimeError ... (a
    bug in spoolq)", exit 1, and the processor crashed with a traceback."""
    try:
        return _expand_home(Path("~/.local/state/spoolq"))
    except RuntimeError:
        raise ConfigError("SPOOL_DIR is not set, and its default ~/.local/state/spoolq "
                          "has no home to be in (HOME is unset or empty and this user has "
                          "no passwd entry); set SPOOL_DIR") from None


def _expand_home(path: Path) -> Path:
    """``path.expanduser()``, an empty HOME taken for unset (this user's passwd entry);
    RuntimeError when this user has no home.

    ``HOME=`` (a cron line, a unit's ``Environment=HOME=``) made Python's ``~`` the
    empty string: the default spool was ``/.local/state/spoolq``, ``~/spool`` was
    ``/spool``, folders at the root of the filesystem."""
    first, _, rest = str(path).partition("/")
    if first != "~" or os.environ.get("HOME") != "":  # ~user is the passwd entry's anyway
        return path.expanduser()
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = ""
    if not home:
        raise RuntimeError("no home directory")
    return Path(home, rest)


def _cwd_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


def _cpu_count() -> int:
    """``JOB_NUM``'s default: the CPUs this process may use (its affinity, its cgroups'
    CPU quota), not the host's (:mod:`spool.cpus`)."""
    return available_cpus()


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def is_host(value: str) -> bool:
    """``value`` is an IP address, or a host name by RFC 1123 (labels of letters, digits
    and inner hyphens, and underscores, which some container networks' names have; not
    all digits, which would be a malformed IPv4 address)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    labels = value.removesuffix(".").split(".")
    return (0 < len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
            and not all(label.isdigit() for label in labels))


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(value: str) -> str | None:
    """``scheme://host[:port]`` of an origin as browsers send it: lower case, no default
    port (``https://x:443`` is ``https://x``, as a browser says it); None when ``value``
    is none (``null``, a path, no host, user info)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = "" if port is None or port == DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{shown}"


def allowed_origins(value: str) -> list[str]:
    """``STATUSD_ALLOWED_ORIGINS``: comma-separated origins, or ``*``; ValueError names
    the first that is none."""
    found = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            found.append(item)
            continue
        origin = origin_of(item)
        if origin is None:
            raise ValueError(f"{item!r} is no origin: give scheme://host[:port] "
                             "(https://dash.example.com), comma-separated, or *")
        found.append(origin)
    return found


MIN_WORKER_MEMORY_MB = 384
"""The least ``SPOOL_WORKER_MEMORY_MB`` other than 0: a worker is ready at about 320 MB
of address space (numpy and pandas, preloaded), and under a cap that leaves it less than
twice what a job keeps it retires after each job (docs/operations.md)."""


class Settings(BaseSettings):
    """Every knob of spoolq; see the module docstring for the variable names."""

    # No env_file here: pydantic-settings would build (and read) its own .env source
    # before settings_customise_sources could replace it.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    spool_dir: Path = Field(default_factory=_default_spool_dir, validation_alias="SPOOL_DIR")
    job_num: int = Field(default_factory=_cpu_count, ge=1, le=1024, validation_alias="JOB_NUM")
    executor: str = Field(default="local", validation_alias="SPOOL_EXECUTOR")
    fsync: FsyncMode = Field(default=FsyncMode.ALWAYS, validation_alias="SPOOL_FSYNC")
    tools: str = Field(default="", validation_alias="SPOOL_TOOLS")
    # Off by default, as gunicorn's --preload: what a module makes at import is shared
    # by every worker then (a random generator's state, a connection).
    preload_tools: bool = Field(default=False, validation_alias="SPOOL_PRELOAD_TOOLS")
    # On by default: numpy, pandas and the quant tools' computations imported at start-up
    # (the processor's background import, the forkserver's preload), so a quant job does
    # not wait for them; off, a processor that runs none starts with ~1.1 s less CPU.
    preload_quant: bool = Field(default=True, validation_alias="SPOOL_PRELOAD_QUANT")
    data_dir_override: Path | None = Field(default=None, validation_alias="SPOOL_DATA_DIR")
    max_job_bytes: int = Field(default=1_048_576, ge=64, validation_alias="SPOOL_MAX_JOB_BYTES")
    # Seconds are finite and at most a day: inf would turn a scan, a settle or the
    # shutdown grace off (or overflow where systemd is told the stop timeout).
    settle_s: float = Field(default=2.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                            validation_alias="SPOOL_SETTLE_S")
    scan_s: float = Field(default=5.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
                          validation_alias="SPOOL_SCAN_S")
    grace_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                           validation_alias="SPOOL_GRACE_S")
    # A COMPUTE worker retires (a fresh one takes its place) after this many jobs, 0 never;
    # and, under the cap on its address space (MB, 0 none), after a job that ran out of
    # memory or left it less than half the headroom it had when ready (processor.worker).
    worker_max_jobs: int = Field(default=0, ge=0, validation_alias="SPOOL_WORKER_MAX_JOBS")
    # At most what RLIMIT_AS takes in bytes (a signed 64-bit rlim_t): past it each worker
    # died at start in setrlimit, forked again at once, and every COMPUTE job failed.
    worker_memory_mb: int = Field(default=0, ge=0, le=(2**63 - 1) >> 20,
                                  validation_alias="SPOOL_WORKER_MEMORY_MB")
    fast_threads: int = Field(default=8, ge=1, le=256, validation_alias="SPOOL_FAST_THREADS")
    log_level: LogLevel = Field(default="INFO", validation_alias="SPOOL_LOG_LEVEL")
    statusd_host: str = Field(default=DEFAULT_STATUSD_HOST, validation_alias="STATUSD_HOST")
    statusd_port: int = Field(default=8000, ge=0, le=65535, validation_alias="STATUSD_PORT")
    statusd_token: str | None = Field(default=None, validation_alias="STATUSD_TOKEN")
    statusd_max_body_bytes: int = Field(default=1_048_576, ge=1024,
                                        validation_alias="STATUSD_MAX_BODY_BYTES")
    # Origins (besides statusd's own) whose pages may open its WebSockets, and whose
    # hosts may name a loopback-bound statusd: a reverse proxy's (statusd.origins).
    statusd_allowed_origins: str = Field(default="", validation_alias="STATUSD_ALLOWED_ORIGINS")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # processor.startup.executor_may_be_named judges from these sources, before
        # they are read, whether the executor can be other than "local": keep it in step.
        dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file(),
                                      env_file_encoding=ENV_FILE_ENCODING)
        return init_settings, env_settings, dotenv, file_secret_settings

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # Path("") is the current directory: `SPOOL_DIR=` would make `spoolq init` (or a
        # unit's ExecStartPre) build a spool wherever it happens to run.
        if isinstance(value, str) and not value:
            raise ValueError("is empty; give a path, or unset it for the default")
        return value

    @field_validator("data_dir_override", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `SPOOL_DATA_DIR=` (the example env file's line, uncommented) means the default.
        return None if isinstance(value, str) and not value else value

    @field_validator("job_num", mode="before")
    @classmethod
    def _empty_is_cpu_count(cls, value: Any) -> Any:
        # `JOB_NUM=` (the example env file's line, uncommented) means the default too,
        # rather than stopping every daemon with exit 2.
        return _cpu_count() if isinstance(value, str) and not value.strip() else value

    @field_validator("job_num", "max_job_bytes", "settle_s", "scan_s", "grace_s",
                     "worker_max_jobs", "worker_memory_mb", "fast_threads", "statusd_port",
                     "statusd_max_body_bytes", mode="before")
    @classmethod
    def _no_digit_groups(cls, value: Any) -> Any:
        # Python's int() and float() read `JOB_NUM=4_0` as 40: a typo ran forty workers.
        if isinstance(value, str) and "_" in value:
            raise ValueError("has '_' in its number (4_0 would read as 40); write the "
                             "digits alone")
        return value

    @field_validator("statusd_host", mode="before")
    @classmethod
    def _empty_host_is_loopback(cls, value: Any) -> Any:
        # aiohttp binds every interface (0.0.0.0 and ::) for an empty host: `STATUSD_HOST=`
        # (a templated env file whose value was missing) opened the API to the network.
        # Empty means the default, as for JOB_NUM; every interface is 0.0.0.0 or ::.
        return DEFAULT_STATUSD_HOST if isinstance(value, str) and not value.strip() else value

    @field_validator("spool_dir", "data_dir_override", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        try:
            path = None if value is None else _expand_home(value)
        except RuntimeError:  # no home: '~' cannot be expanded
            first = str(value).partition("/")[0]
            if first != "~":  # ~name: said "this user has no home" of a user not there
                raise ValueError(f"{value} starts with {first}, and there is no user "
                                 f"{first[1:]!r}; give the whole path") from None
            raise ValueError(f"{value} starts with ~, and this user has no home directory "
                             "(HOME is unset or empty, no passwd entry); give the whole "
                             "path") from None
        if path is not None and not path.is_absolute() and not _cwd_exists():
            # Said "No such file or directory", naming no file (os.path.abspath's getcwd).
            raise ValueError(f"{path} is relative, and the working directory it is relative "
                             "to was removed; give the whole path")
        return path

    @field_validator("statusd_host", mode="after")
    @classmethod
    def _one_address(cls, value: str) -> str:
        # "localhost:8000", "http://127.0.0.1" or "999.1.1.1" went to the resolver at the
        # bind: "Name or service not known" alone, exit 1, restarted for ever (QA).
        if not is_host(value):
            raise ValueError(f"{value!r} is no IP address or host name: give one, without a "
                             "scheme or port (127.0.0.1, ::1, 0.0.0.0, localhost; the port "
                             "is STATUSD_PORT)")
        return value

    @field_validator("statusd_allowed_origins", mode="after")
    @classmethod
    def _origins(cls, value: str) -> str:
        allowed_origins(value)  # each one an origin, or *
        return value

    @field_validator("worker_memory_mb", mode="after")
    @classmethod
    def _room_for_a_worker(cls, value: int) -> int:
        # SPOOL_WORKER_MEMORY_MB=10 was taken: no worker could start its threads, and a
        # COMPUTE job waited in running/ for its timeout, a worker counted busy (QA).
        if 0 < value < MIN_WORKER_MEMORY_MB:
            raise ValueError(f"{value} MB leaves no room for a worker, whose own numpy and "
                             f"pandas take about 320 MB of it; give at least "
                             f"{MIN_WORKER_MEMORY_MB}, or 0 for no cap")
        return value

    @field_validator("statusd_token", mode="after")
    @classmethod
    def _empty_token_is_none(cls, value: str | None) -> str | None:
        # Blanks around it, or only blanks: an HTTP header's value loses them, so every
        # write was answered 401 and none could pass (QA).
        if value and not value.strip():
            raise ValueError("is only blanks, which no client can send: give a token, or "
                             "leave it empty to turn writes off")
        if value and value != value.strip():
            raise ValueError("has blanks at its start or end, which no client can send "
                             "(an HTTP header drops them): remove them")
        return value or None

    @property
    def data_dir(self) -> Path:
        return self.data_dir_override or self.spool_dir / "data"

    @property
    def tool_modules(self) -> list[str]:
        return comma_list(self.tools)


SET_ELSEWHERE = frozenset({"SPOOL_RETENTION"})
"""Variables of ours that are no setting of a program: ``SPOOL_RETENTION`` is read by
the purge unit's command line (systemd/spoolq-purge.service)."""
_OURS = ("SPOOL_", "STATUSD_", "JOB_NUM")


def unknown_settings() -> list[tuple[str, str | None]]:
    """The variables of the environment and of the working directory's ``.env`` named
    like settings (``SPOOL_*``, ``STATUSD_*``, ``JOB_NUM*``) that are none, each with the
    setting its name is closest to, if any: a misspelt one was its default, silently
    (``SPOOL_FSYNCC=never`` left fsync at ``always``; QA).  For the daemons' start-up."""
    known = {str(field.validation_alias).upper() for field in Settings.model_fields.values()
             if field.validation_alias is not None} | SET_ELSEWHERE
    names = set(os.environ) | _env_file_names()[1]
    unknown = sorted(n for n in names if n.upper().startswith(_OURS) and n.upper() not in known)
    return [(name, next(iter(difflib.get_close_matches(name.upper(), sorted(known), n=1)),
                        None)) for name in unknown]


def warn_unknown_settings(log: logging.Logger) -> None:
    """One warning line for each of :func:`unknown_settings`."""
    for name, guess in unknown_settings():
        log.warning("unknown setting %s ignored%s", name,
                    f" (did you mean {guess}?)" if guess else "",
                    extra={"fields": {"setting": name, "did_you_mean": guess}})


def _env_file_names() -> tuple[Path | None, set[str]]:
    """The working directory's ``.env`` and the names it sets; (None, empty) when there
    is none or it cannot be read (its own trouble is told where the settings load)."""
    from dotenv import dotenv_values  # noqa: PLC0415 - only at a start or a bad setting

    try:
        path = env_file()
        return path, (set(dotenv_values(path, encoding=ENV_FILE_ENCODING))
                      if path is not None else set())
    except (ConfigError, OSError, UnicodeDecodeError):
        return None, set()


def _set_in_env_file(name: str) -> Path | None:
    """The .env file that sets ``name`` (as pydantic-settings reads it: any case), or
    None when none does."""
    path, names = _env_file_names()
    if path is None or name.upper() not in {key.upper() for key in names}:
        return None
    return path.absolute()


def _bom_bytes() -> int:
    """How many bytes the .env's byte order mark takes (0: none): read as utf-8-sig, its
    bad byte's offset is counted past the mark, 3 short of the file's (h407)."""
    from spool.text import UTF8_BOM  # noqa: PLC0415 - only when a .env is not UTF-8

    try:
        with open(ENV_FILE, "rb") as fh:
            return len(UTF8_BOM) if fh.read(len(UTF8_BOM)) == UTF8_BOM else 0
    except OSError:
        return 0


def load_settings(*, options: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides; bad values raise ConfigError.

    A bad value is named as it was given: a variable by its name (``SPOOL_DIR``), an
    override by its command-line option in ``options`` (field name -> ``--spool-dir``).
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except UnicodeDecodeError as exc:  # python-dotenv reads .env as UTF-8
        raise ConfigError(f"cannot read .env: not UTF-8 (byte {exc.start + _bom_bytes()})"
                          ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        where = (options or {}).get(where, where)
        from spool.models import error_text  # noqa: PLC0415 - an error's path: see spool.cli

        why = error_text(first)  # a validator's own reason, without "Value error, "
        given = {name.upper() for name in os.environ}  # read without regard to case
        if where.upper() not in given and (source := _set_in_env_file(where)) is not None:
            # The working directory's .env set it, where an operator checking `env`
            # found nothing (QA).
            why += f" (set in {source})"
        raise ConfigError(f"invalid setting {where}: {why}") from exc
