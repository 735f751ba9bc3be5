"""Deployment settings, read from environment variables only.

One set of definitions serves both deployments; what changes between the embedded default
(a new user's first run, the tests' fast path) and production is only these variables:

==========================  ==========================================  =============================
variable                    meaning                                     embedded default
==========================  ==========================================  =============================
``ASTRID_HOME``             local state folder                          ``./.astrid``
``ASTRID_DATABASE_URL``     SQLAlchemy URL for AstrID's tables          SQLite ``<home>/astrid.db``
``ASTRID_OBJECT_STORE``     folder path or ``s3://bucket/prefix``       ``<home>/objects``
``AWS_ENDPOINT_URL_S3``     S3 endpoint (R2, MinIO); read by boto3      AWS
``MLFLOW_TRACKING_URI``     MLflow tracking server or store             SQLite ``<home>/mlflow.db``
``ASTRID_FITS_DROP``        FITS drop folder ``<root>/<YYYY-MM-DD>/``   unset: simulated survey
``ASTRID_FIRST_NIGHT``      first nightly partition (UTC date)          ``2000-01-01``
==========================  ==========================================  =============================

Values are read when called, never cached at import, so a test or a deployment can change
them without reloading the code. Secrets (passwords in URLs, AWS keys) live only in these
variables; :func:`redact_url` is how a URL is shown to people.
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


def redact_url(url: str) -> str:
    """A URL safe to show in logs and metadata: any password replaced by ``***``."""
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (e.g. s3://): strip any userinfo part
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
