"""``astrid doctor``: is every configured backend usable? One plain line per backend.

Checks the backends :mod:`astrid_assets.settings` names, as this process sees them:

* **database** (``ASTRID_DATABASE_URL``): reachable, AstrID's tables present with their declared
  columns, and the Alembic migrations (the tables people write) at head. Nightly tables are
  created by the first materialization that writes them, or by ``astrid doctor --migrate``
  (which also runs the migrations); until then the line says *not migrated* and names what is
  missing. A table that lacks a declared column is reported too (``--migrate`` creates tables,
  it does not alter existing ones), and so is an ``alembic_version`` holding a revision that is
  not AstrID's (another application sharing the database and its version table).
* **object store** (``ASTRID_OBJECT_STORE``): a probe object is written, read back, compared and
  deleted.
* **mlflow** (``MLFLOW_TRACKING_URI``): an ``http(s)`` server must answer ``GET <uri>/health``; a
  file store's folder must be writable (or creatable); a database store must accept a connection.

Each line reads ``<backend>  <redacted URL>  OK: …`` or ``… FAILED: <reason>``; the exit code is
1 when any check failed. Passwords in URLs are never printed.
"""

from __future__ import annotations

import argparse
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from astrid_assets import settings

PROBE_PREFIX = "_doctor/"
HTTP_TIMEOUT_S = 10.0
DATABASE_ATTEMPTS = 2  #: a quick verdict: one retry after 0.25 s


@dataclass(frozen=True)
class CheckResult:
    backend: str
    target: str  #: redacted URL or path
    ok: bool
    detail: str

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return f"{self.backend:<13} {self.target}  {verdict}: {self.detail}"


class _Quiet:
    """A logger that drops the per-attempt retry warnings: the one line per backend says it all."""

    def warning(self, *_args, **_kwargs) -> None:
        pass


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _alembic_state(connection) -> tuple[str | None, str, bool]:
    """(the database's revision, the code's head, whether that revision is one of AstrID's)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from astrid_assets.io import migrate

    script = ScriptDirectory(str(migrate.MIGRATIONS))
    version_table = migrate.VERSION_TABLE  # not Dagster's alembic_version, which may share the database
    current = MigrationContext.configure(connection, opts={"version_table": version_table}).get_current_revision()
    known = current is None or current in {revision.revision for revision in script.walk_revisions()}
    return current, script.get_current_head(), known


def check_database(url: str, migrate: bool = False, schema_name: str | None = "public") -> CheckResult:
    """Reachable, every declared table present with its declared columns, Alembic migrations at head.

    Nightly tables are created with ``metadata.create_all`` (as the table IO manager does on first
    write); the tables people write (:data:`migrations.MIGRATED_TABLES`) only by the Alembic migrations.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from astrid_assets.io import migrate as migrations
    from astrid_assets.io.schema import metadata
    from astrid_assets.io.tables import DatabaseUnavailableError, connect_with_retry

    target = settings.redact_url(url)
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    schema_name = None if is_sqlite else schema_name
    if is_sqlite and parsed.database and not migrate and not Path(parsed.database).exists():
        return CheckResult("database", target, False, "not migrated: the database file does not exist yet "
                           "(run `astrid doctor --migrate`, or materialize an asset)")
    nightly = [table for name, table in metadata.tables.items() if name not in migrations.MIGRATED_TABLES]
    try:
        with connect_with_retry(url, attempts=DATABASE_ATTEMPTS, log=_Quiet()) as connection:
            before = set(inspect(connection).get_table_names(schema=schema_name))
            revision, head, known = _alembic_state(connection)
            connection.rollback()
            if migrate and known:
                if schema_name:
                    connection.execution_options(schema_translate_map={None: schema_name})
                metadata.create_all(connection, tables=nightly)
                connection.commit()
                if revision != head:
                    migrations.upgrade(url)
                revision, head, known = _alembic_state(connection)
            inspector = inspect(connection)
            present = set(inspector.get_table_names(schema=schema_name))
            drift = {
                name: sorted(set(table.c.keys()) - {c["name"] for c in inspector.get_columns(name, schema=schema_name)})
                for name, table in metadata.tables.items()
                if name in present
            }
    except DatabaseUnavailableError as error:
        return CheckResult("database", target, False, str(error).replace(f"database {target} ", "", 1))
    except Exception as error:  # permissions, a wrong database name, a failed migration, ...
        return CheckResult("database", target, False, _short(error))
    if not known:
        return CheckResult("database", target, False, f"alembic_version holds revision {revision!r}, which is not "
                           f"one of AstrID's migrations (another application sharing this database, such as "
                           f"Dagster's storage, uses the same alembic_version table)")
    missing = sorted(set(metadata.tables) - present)
    if missing:
        return CheckResult("database", target, False, f"reachable but not migrated: missing tables "
                           f"{', '.join(missing)} (run `astrid doctor --migrate`)")
    if revision != head:
        return CheckResult("database", target, False, f"reachable but migrations are not at head: database at "
                           f"{revision}, code at {head} (run `astrid doctor --migrate`)")
    drift = {name: columns for name, columns in drift.items() if columns}
    if drift:
        lacking = "; ".join(f"{name} lacks {', '.join(columns)}" for name, columns in sorted(drift.items()))
        return CheckResult("database", target, False, f"reachable but the tables differ from the declared "
                           f"schema: {lacking} (migrate these tables by hand)")
    created = sorted(set(metadata.tables) - before)
    done = f"created {', '.join(created)}; " if created else ""
    return CheckResult("database", target, True,
                       f"reachable, {done}all {len(metadata.tables)} tables present, migrations at head ({head})")


def check_object_store(url: str) -> CheckResult:
    """Write, read back and delete a probe object."""
    from astrid_assets.io.object_store import LocalObjectStore, S3ObjectStore

    target = settings.redact_url(url)
    if url.startswith("s3://"):
        endpoint = settings.s3_endpoint()
        target += f" (endpoint {settings.redact_url(endpoint)})" if endpoint else " (AWS)"
    key = f"{PROBE_PREFIX}probe-{uuid.uuid4().hex}.txt"
    content = f"astrid doctor probe {key}".encode()
    try:
        store = S3ObjectStore(url, max_attempts=2, connect_timeout=HTTP_TIMEOUT_S) if url.startswith("s3://") \
            else LocalObjectStore(url)
        store.put(key, content)
        try:
            if store.get(key) != content:
                return CheckResult("object store", target, False, "the probe object read back differs")
        finally:
            store.delete([key])
        if key in store.list(PROBE_PREFIX):
            return CheckResult("object store", target, False, "the probe object could not be deleted")
        if isinstance(store, LocalObjectStore):
            try:
                (store.root / PROBE_PREFIX).rmdir()
            except OSError:
                pass
    except Exception as error:  # ObjectStoreError messages carry no credentials
        return CheckResult("object store", target, False, _short(error))
    return CheckResult("object store", target, True, "wrote, read back and deleted a probe object")


def _writable_folder(folder: Path) -> str | None:
    """None if ``folder`` is (or can be created as) a writable folder; else why not."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return f"no existing parent folder of {folder}"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".astrid-doctor-"):
            pass
    except OSError as error:
        return f"{existing} is not writable ({error.strerror or error})"
    return None


def check_mlflow(uri: str) -> CheckResult:
    """An http(s) server answers /health; a file store's folder is writable; a database store connects."""
    target = settings.redact_url(uri)
    scheme = urlparse(uri).scheme.lower()
    if scheme in {"http", "https"}:
        parsed = urlparse(uri)
        netloc = parsed.netloc.rsplit("@", 1)[-1]  # credentials go in a header, never in the URL we open
        health = parsed._replace(netloc=netloc, path=parsed.path.rstrip("/") + "/health", query="").geturl()
        request = urllib.request.Request(health, method="GET")
        username, password, bearer = settings.mlflow_credentials()
        username = username or (unquote(parsed.username) if parsed.username else None)
        if username:
            import base64

            password = password or unquote(parsed.password or "")
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        elif bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            return CheckResult("mlflow", target, False, f"GET /health answered HTTP {error.code}")
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return CheckResult("mlflow", target, False, f"tracking server unreachable: {reason}")
        if status != 200:
            return CheckResult("mlflow", target, False, f"GET /health answered HTTP {status}")
        return CheckResult("mlflow", target, True, "tracking server answered /health")
    if scheme in {"", "file"}:
        folder = Path(unquote(urlparse(uri).path) if scheme == "file" else uri).expanduser()
        problem = _writable_folder(folder)
        if problem:
            return CheckResult("mlflow", target, False, f"file store not writable: {problem}")
        state = "writable" if folder.exists() else "creatable (created on first use)"
        return CheckResult("mlflow", target, True, f"file store folder {state}")
    if scheme.split("+")[0] in {"sqlite", "postgresql", "mysql", "mssql"}:
        from sqlalchemy import create_engine, text

        engine = create_engine(uri)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:
            message = _short(error)
            password = urlparse(uri).password
            return CheckResult("mlflow", target, False, message.replace(password, "***") if password else message)
        finally:
            engine.dispose()
        return CheckResult("mlflow", target, True, "tracking database reachable")
    return CheckResult("mlflow", target, True, f"not checked: no check for '{scheme}' tracking URIs")


def run_checks(migrate: bool = False) -> list[CheckResult]:
    return [
        check_database(settings.database_url(), migrate=migrate),
        check_object_store(settings.object_store_url()),
        check_mlflow(settings.mlflow_tracking_uri()),
    ]


def doctor(args: argparse.Namespace) -> int:
    results = run_checks(migrate=args.migrate)
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(result.ok for result in results) else 1


def add_parser(commands) -> None:
    """Register ``astrid doctor`` on the CLI's subcommands."""
    parser = commands.add_parser("doctor", help="check that the configured database, object store and MLflow work")
    parser.add_argument("--migrate", action="store_true", help="create AstrID's missing tables first")
    parser.set_defaults(handler=doctor)
