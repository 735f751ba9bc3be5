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
``ASTRID_ALERT_WEBHOOK``       URL run-failure alerts are posted to (secret)   unset: alerts are logged only
``ASTRID_DAGSTER_URL``         webserver that ``astrid trigger`` talks to      ``http://127.0.0.1:3000``
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


def alert_webhook() -> str | None:
    """URL that run-failure alerts are posted to (``ASTRID_ALERT_WEBHOOK``), or None: alerts are only logged.

    The URL usually holds a token: it is a secret, never logged or shown.
    """
    return os.environ.get("ASTRID_ALERT_WEBHOOK") or None


def dagster_url() -> str:
    """The Dagster webserver ``astrid trigger`` talks to (``ASTRID_DAGSTER_URL``, default http://127.0.0.1:3000)."""
    return os.environ.get("ASTRID_DAGSTER_URL", "http://127.0.0.1:3000")


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
