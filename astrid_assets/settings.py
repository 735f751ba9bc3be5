"""Deployment settings, read from environment variables only.

One set of definitions serves both deployments; what changes between the embedded default
(a new user's first run, the tests' fast path) and production is only these variables:

=============================  ==============================================  ==============================
variable                       meaning                                         embedded default
=============================  ==============================================  ==============================
``ASTRID_HOME``                local state folder                              ``./.astrid``
``ASTRID_DATABASE_URL``        SQLAlchemy URL for AstrID's tables              SQLite ``<home>/astrid.db``
``ASTRID_OBJECT_STORE``        folder path or ``s3://bucket/prefix``           ``<home>/objects``
``AWS_ENDPOINT_URL_S3``        S3 endpoint (R2, MinIO); read by boto3          AWS
``MLFLOW_TRACKING_URI``        MLflow tracking server or store                 SQLite ``<home>/mlflow.db``
``ASTRID_FITS_DROP``           FITS drop folder ``<root>/<YYYY-MM-DD>/``       unset: simulated survey
``ASTRID_FIRST_NIGHT``         first nightly partition (UTC date) (*)          ``2000-01-01``
``ASTRID_NIGHTLY_HOUR_UTC``    UTC hour of the nightly schedule (*)            ``12``
``ASTRID_SENSOR_INTERVAL_S``   seconds between sensor evaluations (*)          ``300``
``ASTRID_RETRAIN_MIN_LABELS``  new labels that trigger a retraining            ``200``
``ASTRID_RESCORE_NIGHTS``      recent nights re-scored after a new champion    ``7``
``ASTRID_TRAIN_PROCESSES``     U-Net training processes (DDP, one per GPU)     ``1``: in the step's process
``ASTRID_ALERT_WEBHOOK``       URL run-failure alerts are posted to (secret)   unset: alerts are logged only
``ASTRID_DAGSTER_URL``         webserver that ``astrid trigger`` talks to      ``http://127.0.0.1:3000``
``ASTRID_REVIEW_SECRET``       signs ``astrid review``'s sessions (secret)     random per process
``ASTRID_REVIEW_USER_HEADER``  header a trusted proxy names the person in      unset: passwords
``ASTRID_REVIEW_TRUSTED_PROXIES`` hosts/CIDRs allowed to set that header       none
``ASTRID_REVIEW_HTTPS_ONLY``   ``1``: session cookie over HTTPS only           unset
``ASTRID_POOL``                where a step's frames run: ``serial``,          ``processes``
                               ``processes`` or ``dask`` (:mod:`~astrid_assets.pool`)
``ASTRID_WORKERS``             worker processes of the ``processes`` pool      cores the container may use
``ASTRID_WORKER_MAX_TASKS``    frames each worker process runs before fresh    ``100``
                               ones replace them (bounds their memory)
``ASTRID_DASK_ADDRESS``        scheduler of an existing Dask cluster           unset (required by ``dask``)
``ASTRID_NOTIFICATIONS``       ``off``/``0``: send no notifications            on
``ASTRID_SMTP_URL``            ``smtp[s]://user:password@host:port`` (secret)  unset (or the ``_HOST`` form)
``ASTRID_SMTP_HOST``           SMTP server, with ``ASTRID_SMTP_PORT`` (587),    unset: no e-mail
                               ``_USER``, ``_PASSWORD`` (secret), ``_SSL``
``ASTRID_NOTIFY_FROM``         sender of notification e-mails                 ``astrid@localhost``
``ASTRID_NOTIFY_TO``           recipients, comma-separated                     unset: no e-mail
``ASTRID_NOTIFY_WEBHOOK``      URL notifications are posted to (secret)        unset: no webhook
``DAGSTER_HOME``               Dagster instance folder; read by Dagster too    ``astrid``: ``<home>/dagster``
``MLFLOW_TRACKING_USERNAME``   MLflow server login (with ``_PASSWORD``;         unset
                               or ``MLFLOW_TRACKING_TOKEN``) (secret)
``MAST_TOKEN``                 MAST token for proprietary data (secret)        unset
``ASTRID_TEST_POSTGRES``       server the integration tests make databases on  ``postgres@127.0.0.1:5432``
``ASTRID_REAL_DATA``           folder of real frames the tests read (**)       ``../shared/data/real``
``ASTRID_REQUIRE_REAL_DATA``   ``1``: tests fail, not skip, without them (**)  unset: they are skipped
=============================  ==============================================  ==============================

Values are read when called, never cached at import, so a test or a deployment can change
them without reloading the code. The ones marked (*) are called when the definitions are built
(a partitions definition, a schedule's hour and a sensor's interval are fixed for the life of a
code location), so they take effect when the code location is (re)loaded. Secrets (passwords in
URLs, AWS keys, the alert webhook's token) live only in these variables and are never logged;
:func:`redact_url` is how a URL is shown to people. The ones marked (**) are read by the tests only:
frames AstrID did not make (:func:`real_data_dir`, relative to the project root) are used where they
are, and a checkout without them skips those tests with a message naming the folder, unless
:func:`real_data_required` (CI sets it: ``.ci/run``).
"""

import os
from datetime import date
from pathlib import Path

from sqlalchemy.engine import make_url


def astrid_home() -> Path:
    """The local state folder (SQLite database, object folder, MLflow store, Dagster home)."""
    return Path(os.environ.get("ASTRID_HOME", "./.astrid")).expanduser().resolve()


def database_url() -> str:
    """SQLAlchemy URL of the table store; SQLite under ``ASTRID_HOME`` by default."""
    return os.environ.get("ASTRID_DATABASE_URL") or f"sqlite:///{astrid_home() / 'astrid.db'}"


def resolved_database_url(url: str | None = None) -> str:
    """``url`` when one is set in code (a resource's or the table IO manager's field), else :func:`database_url`.

    The one rule for which database a component uses; resources and IO managers call it through
    their own ``resolved_url()``.
    """
    return url or database_url()


def object_store_url() -> str:
    """Folder path or ``s3://bucket/prefix`` URL of the image and weights store."""
    return os.environ.get("ASTRID_OBJECT_STORE") or str(astrid_home() / "objects")


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI; a local SQLite store under ``ASTRID_HOME`` by default (artifacts beside it).

    MLflow 3 keeps its file store in maintenance mode (no model registry features), hence SQLite.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{astrid_home() / 'mlflow.db'}"


def mlflow_local_artifacts() -> str:
    """Artifact location of experiments created in the embedded (SQLite) MLflow store."""
    return (astrid_home() / "mlartifacts").as_uri()


def fits_drop_root() -> str | None:
    """Root of a FITS drop folder laid out as ``<root>/<YYYY-MM-DD>/*.fits``, if configured."""
    return os.environ.get("ASTRID_FITS_DROP") or None


#: First nightly partition when ``ASTRID_FIRST_NIGHT`` is unset: early enough for archival CCD data.
DEFAULT_FIRST_NIGHT = "2000-01-01"


def first_night() -> str:
    """The first nightly partition, ``YYYY-MM-DD`` (``ASTRID_FIRST_NIGHT``, default 2000-01-01).

    Read when the definitions are loaded (a partitions definition is fixed for the life of a code
    location); a malformed value is an error that names the variable.
    """
    value = os.environ.get("ASTRID_FIRST_NIGHT") or DEFAULT_FIRST_NIGHT
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"ASTRID_FIRST_NIGHT={value!r} is not a date YYYY-MM-DD") from None
    return value


def _integer(variable: str, default: str) -> int:
    """An integer setting; a malformed value is an error that names the variable."""
    value = os.environ.get(variable, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{variable}={value!r} is not an integer") from None


def nightly_hour_utc() -> int:
    """UTC hour after which the night that just ended is processed (``ASTRID_NIGHTLY_HOUR_UTC``, default 12).

    Called when the definitions are built: the schedule's hour is fixed for the life of a code location.
    """
    return _integer("ASTRID_NIGHTLY_HOUR_UTC", "12")


def sensor_interval_s() -> int:
    """Seconds between evaluations of AstrID's sensors (``ASTRID_SENSOR_INTERVAL_S``, default 300).

    Called when the definitions are built: a sensor's interval is fixed for the life of a code location.
    """
    return _integer("ASTRID_SENSOR_INTERVAL_S", "300")


def retrain_min_labels() -> int:
    """New labels since the last training that trigger a retraining (``ASTRID_RETRAIN_MIN_LABELS``, default 200)."""
    return _integer("ASTRID_RETRAIN_MIN_LABELS", "200")


def rescore_nights() -> int:
    """How many of the most recent nights with candidates are kept scored by the champion
    (``ASTRID_RESCORE_NIGHTS``, default 7)."""
    return _integer("ASTRID_RESCORE_NIGHTS", "7")


def train_processes() -> int:
    """Processes that train a U-Net version (``ASTRID_TRAIN_PROCESSES``, default 1: in the step's own process).

    More than one launches that many DistributedDataParallel workers with ``torchrun``
    (:mod:`astrid_assets.ml.distributed`): one per GPU on CUDA, gloo on CPUs."""
    processes = _integer("ASTRID_TRAIN_PROCESSES", "1")
    if processes < 1:
        raise ValueError(f"ASTRID_TRAIN_PROCESSES={processes} must be at least 1")
    return processes


def alert_webhook() -> str | None:
    """URL that run-failure alerts are posted to (``ASTRID_ALERT_WEBHOOK``), or None: alerts are only logged.

    The URL usually holds a token: it is a secret, never logged or shown.
    """
    return os.environ.get("ASTRID_ALERT_WEBHOOK") or None


def dagster_url() -> str:
    """The Dagster webserver ``astrid trigger`` talks to (``ASTRID_DAGSTER_URL``, default http://127.0.0.1:3000)."""
    return os.environ.get("ASTRID_DAGSTER_URL", "http://127.0.0.1:3000")


def review_secret() -> str | None:
    """Key that signs the scanning page's session cookies (``ASTRID_REVIEW_SECRET``; a secret, never shown).
    Unset: a random key per process, so people sign in again after a restart."""
    return os.environ.get("ASTRID_REVIEW_SECRET") or None


def review_user_header() -> str | None:
    """Header a trusted proxy sets to the signed-in person's name (``ASTRID_REVIEW_USER_HEADER``, e.g.
    ``X-Forwarded-User``), or None: people sign in with their password."""
    return os.environ.get("ASTRID_REVIEW_USER_HEADER") or None


def review_trusted_proxies() -> list[str]:
    """Hosts, addresses or networks (CIDR) whose :func:`review_user_header` is believed
    (``ASTRID_REVIEW_TRUSTED_PROXIES``, comma-separated; default none)."""
    return [part.strip() for part in os.environ.get("ASTRID_REVIEW_TRUSTED_PROXIES", "").split(",") if part.strip()]


def review_https_only() -> bool:
    """Whether the scanning page's session cookie is sent over HTTPS only (``ASTRID_REVIEW_HTTPS_ONLY=1``)."""
    return os.environ.get("ASTRID_REVIEW_HTTPS_ONLY", "").strip().lower() in {"1", "true", "yes"}


def dagster_home() -> str | None:
    """The Dagster instance folder ``DAGSTER_HOME`` if set, else None.

    Dagster reads the variable itself; the ``astrid`` command sets it to ``<home>/dagster`` when unset.
    """
    return os.environ.get("DAGSTER_HOME") or None


def redact_url(url: str) -> str:
    """A URL safe to show in logs and metadata: any password replaced by ``***``."""
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (e.g. s3://): strip any userinfo part
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint boto3 talks to (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), or None
    for AWS itself. boto3 reads these variables on its own; this is for showing where the bucket is."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def mlflow_credentials() -> tuple[str | None, str | None, str | None]:
    """``(username, password, token)`` for an MLflow tracking server (``MLFLOW_TRACKING_USERNAME``,
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``; each None when unset). Secrets: never logged."""
    return (os.environ.get("MLFLOW_TRACKING_USERNAME") or None, os.environ.get("MLFLOW_TRACKING_PASSWORD") or None,
            os.environ.get("MLFLOW_TRACKING_TOKEN") or None)


def mast_token() -> str | None:
    """MAST API token for proprietary data (``MAST_TOKEN``), or None. A secret: never logged."""
    return os.environ.get("MAST_TOKEN") or None


def notifications_enabled() -> bool:
    """The switch for notifications of notable transients: off when ``ASTRID_NOTIFICATIONS`` is
    ``off``/``0``/``false``/``no``; on otherwise (they still need a channel: e-mail or a webhook)."""
    return os.environ.get("ASTRID_NOTIFICATIONS", "on").strip().lower() not in {"off", "0", "false", "no"}


def smtp_server() -> dict | None:
    """The SMTP server notifications are mailed through, or None: ``host``, ``port``, ``user``, ``password``
    (secrets: never logged) and ``ssl`` (implicit TLS; otherwise STARTTLS when the server offers it).

    ``ASTRID_SMTP_URL`` (``smtp://user:password@host:587``, ``smtps://…:465``; percent-encode special
    characters) or ``ASTRID_SMTP_HOST`` with ``ASTRID_SMTP_PORT`` (default 587), ``ASTRID_SMTP_USER``,
    ``ASTRID_SMTP_PASSWORD`` and ``ASTRID_SMTP_SSL=1``. SendGrid: host ``smtp.sendgrid.net``, user ``apikey``,
    the API key as password.
    """
    from urllib.parse import unquote, urlsplit

    url = os.environ.get("ASTRID_SMTP_URL")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(f"ASTRID_SMTP_URL={redact_url(url)!r} is not smtp[s]://[user:password@]host[:port]")
        ssl = parts.scheme == "smtps"
        return {"host": parts.hostname, "port": parts.port or (465 if ssl else 587),
                "user": unquote(parts.username) if parts.username else None,
                "password": unquote(parts.password) if parts.password else None, "ssl": ssl}
    host = os.environ.get("ASTRID_SMTP_HOST")
    if not host:
        return None
    ssl = os.environ.get("ASTRID_SMTP_SSL", "").strip().lower() in {"1", "true", "yes"}
    return {"host": host, "port": _integer("ASTRID_SMTP_PORT", "465" if ssl else "587"),
            "user": os.environ.get("ASTRID_SMTP_USER") or None,
            "password": os.environ.get("ASTRID_SMTP_PASSWORD") or None, "ssl": ssl}


def notify_from() -> str:
    """Sender address of notification e-mails (``ASTRID_NOTIFY_FROM``, default ``astrid@localhost``)."""
    return os.environ.get("ASTRID_NOTIFY_FROM") or "astrid@localhost"


def notify_to() -> list[str]:
    """Recipients of notification e-mails (``ASTRID_NOTIFY_TO``, comma-separated); empty: no e-mail."""
    return [part.strip() for part in os.environ.get("ASTRID_NOTIFY_TO", "").split(",") if part.strip()]


def notify_webhook() -> str | None:
    """URL notifications are posted to as JSON (``ASTRID_NOTIFY_WEBHOOK``), or None. A secret: never logged."""
    return os.environ.get("ASTRID_NOTIFY_WEBHOOK") or None


#: The frame pools :func:`pool_kind` accepts (:mod:`astrid_assets.pool`).
POOL_KINDS = ("serial", "processes", "dask")


def pool_kind() -> str:
    """Where a nightly step runs its frames (``ASTRID_POOL``): ``serial``, ``processes`` (default) or ``dask``."""
    value = (os.environ.get("ASTRID_POOL") or "processes").strip().lower()
    if value not in POOL_KINDS:
        raise ValueError(f"ASTRID_POOL={value!r} is not one of {', '.join(POOL_KINDS)}")
    return value


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, lowered to a cgroup CPU quota where one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = int(text[0]) / int(text[1]) if text[0] != "max" else None
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            quota = limit / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text()) if limit > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def pool_workers() -> int:
    """Worker processes of the ``processes`` pool (``ASTRID_WORKERS``, default :func:`available_cores`)."""
    workers = _integer("ASTRID_WORKERS", str(available_cores()))
    if workers < 1:
        raise ValueError(f"ASTRID_WORKERS={workers} must be at least 1")
    return workers


def worker_max_tasks() -> int:
    """Frames each ``processes`` worker runs, on average, before fresh workers replace them
    (``ASTRID_WORKER_MAX_TASKS``, 100): what a worker's heap grows to is given back to the system that often."""
    return max(1, _integer("ASTRID_WORKER_MAX_TASKS", "100"))


def dask_address() -> str | None:
    """Scheduler address of an existing Dask cluster (``ASTRID_DASK_ADDRESS``, e.g. ``tcp://scheduler:8786``)."""
    return os.environ.get("ASTRID_DASK_ADDRESS") or None


class DeploymentError(RuntimeError):
    """The settings cannot work for this deployment (the message says which variable and why)."""


#: Run launchers that run a run on the machine that launched it; any other places runs on other machines.
SINGLE_HOST_LAUNCHERS = frozenset({"DefaultRunLauncher", "SyncInMemoryRunLauncher"})


def multi_host_problems(pool: str, run_launcher: str | None = None, instance_storage: str | None = None) -> list[str]:
    """Why these settings cannot run AstrID beyond one host; empty when they can, or when it runs on one.

    AstrID runs beyond one host when the frame pool is ``dask`` or Dagster's run launcher (its class
    name, ``run_launcher``) places runs on other machines. Then every machine must reach the same
    tables and objects: PostgreSQL (``ASTRID_DATABASE_URL``) and an S3 bucket (``ASTRID_OBJECT_STORE``),
    and a Dagster instance not on SQLite (``instance_storage``: the class name of its run storage).
    """
    reasons = [why for why, applies in (
        (f"ASTRID_POOL={pool}", pool == "dask"),
        (f"the run launcher {run_launcher}", run_launcher is not None and run_launcher not in SINGLE_HOST_LAUNCHERS),
    ) if applies]
    if not reasons:
        return []
    problems = []
    if make_url(database_url()).get_backend_name() != "postgresql":
        problems.append(f"ASTRID_DATABASE_URL is {redact_url(database_url())}: a PostgreSQL URL "
                        "(postgresql+psycopg2://…) is required")
    if not object_store_url().startswith("s3://"):
        problems.append(f"ASTRID_OBJECT_STORE is the local folder {object_store_url()}: an S3 bucket "
                        "(s3://bucket/prefix) is required")
    if pool == "dask" and not dask_address():
        problems.append("ASTRID_DASK_ADDRESS is unset: the scheduler address of the Dask cluster is required")
    if instance_storage and instance_storage.lower().startswith("sqlite"):
        problems.append(f"the Dagster instance stores its runs in SQLite ({instance_storage}): configure "
                        "PostgreSQL storage in dagster.yaml")
    return [f"AstrID runs beyond one host ({' and '.join(reasons)}) but {problem}" for problem in problems]


def require_multi_host_storage(pool: str, run_launcher: str | None = None, instance_storage: str | None = None) -> None:
    """Raise :class:`DeploymentError` listing :func:`multi_host_problems`, if there are any."""
    problems = multi_host_problems(pool, run_launcher, instance_storage)
    if problems:
        raise DeploymentError("; ".join(problems))


def test_postgres_admin_url() -> str:
    """PostgreSQL server where integration tests create their throw-away databases (``ASTRID_TEST_POSTGRES``,
    default the machine's server on 127.0.0.1:5432 as ``postgres``, trust authentication)."""
    return os.environ.get("ASTRID_TEST_POSTGRES") or "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


#: The project root: the folder holding ``pyproject.toml`` and ``astrid_assets/``.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """Folder of real frames the tests read (``ASTRID_REAL_DATA``, default ``../shared/data/real``); a relative
    path is taken from the project root (:data:`PROJECT_ROOT`). Subfolders: ``eso085-030/``, ``m51-raw/``."""
    return (PROJECT_ROOT / Path(os.environ.get("ASTRID_REAL_DATA") or "../shared/data/real").expanduser()).resolve()


def real_data_required() -> bool:
    """Whether a missing :func:`real_data_dir` fails the tests that read it rather than skipping them
    (``ASTRID_REQUIRE_REAL_DATA`` = ``1``/``true``/``yes``; CI sets it)."""
    return os.environ.get("ASTRID_REQUIRE_REAL_DATA", "").strip().lower() in {"1", "true", "yes"}
