"""``astrid doctor`` against real servers (PostgreSQL, moto's S3, an MLflow tracking server) and closed ports."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from astrid_assets.cli import main
from astrid_assets.io.schema import metadata
from astrid_assets.io.tables import engine_for
from astrid_assets.testing import servers

pytestmark = pytest.mark.integration

DB_PASSWORD = "DoctorDbPassw0rd-QUUX"
MLFLOW_PASSWORD = "DoctorMlflowPw-GRAULT"
AWS_SECRET = "DoctorAwsSecret-GARPLY"


@contextmanager
def not_mlflow_server():
    """An HTTP server that is not MLflow: every path answers 404; yields its URL."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    from astrid_assets.io.migrate import MIGRATIONS

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def doctor(capsys, *args: str) -> tuple[int, dict[str, str], str]:
    """Exit code, the line of each backend, and everything printed."""
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    lines = {line.split()[0] if not line.startswith("object store") else "object store": line
             for line in captured.out.splitlines() if line.strip()}
    return code, lines, captured.out + captured.err


def test_doctor_on_real_servers_reports_not_migrated_then_migrates(s3_endpoint, mlflow_uri, monkeypatch, capsys):
    bucket = f"astrid-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    with servers.postgres_database(prefix="astrid_doctor") as url:
        url_with_password = make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
        monkeypatch.setenv("ASTRID_DATABASE_URL", url_with_password)  # trust auth: accepted
        monkeypatch.setenv("ASTRID_OBJECT_STORE", f"s3://{bucket}/astrid")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        try:
            code, lines, printed = doctor(capsys)
            assert code == 1
            assert "FAILED: reachable but not migrated: missing tables" in lines["database"]
            assert all(name in lines["database"] for name in metadata.tables)
            assert "OK: wrote, read back and deleted a probe object" in lines["object store"]
            assert f"endpoint {s3_endpoint}" in lines["object store"]
            assert lines["mlflow"].endswith("OK: tracking server answered /health")

            code, lines, migrated = doctor(capsys, "--migrate")
            assert code == 0, migrated
            assert "OK: reachable, created " in lines["database"]

            code, lines, again = doctor(capsys)
            assert code == 0, again
            assert lines["database"].endswith(
                f"OK: reachable, all {len(metadata.tables)} tables present, migrations at head ({alembic_head()})")
            assert make_url(url_with_password).render_as_string(hide_password=True) in lines["database"]
        finally:
            engine_for(url_with_password).dispose()
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # the probes were deleted
    for text in (printed, migrated, again):
        assert DB_PASSWORD not in text


def test_doctor_on_closed_ports_fails_each_backend_with_a_redacted_reason(closed_port, monkeypatch, capsys):
    database_port, s3_port, mlflow_port = closed_port(), closed_port(), closed_port()
    monkeypatch.setenv("ASTRID_DATABASE_URL", f"postgresql+psycopg2://astrid:{DB_PASSWORD}@127.0.0.1:{database_port}/a")
    monkeypatch.setenv("ASTRID_OBJECT_STORE", "s3://astrid-bucket/astrid")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{s3_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "doctor-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlflow:{MLFLOW_PASSWORD}@127.0.0.1:{mlflow_port}")
    code, lines, printed = doctor(capsys)
    assert code == 1
    assert lines["database"].startswith(f"database      postgresql+psycopg2://astrid:***@127.0.0.1:{database_port}/a")
    assert "FAILED: unreachable after 2 attempts" in lines["database"] and "Connection refused" in lines["database"]
    assert "FAILED: ObjectStoreError:" in lines["object store"] and "EndpointConnectionError" in lines["object store"]
    assert f"(endpoint http://127.0.0.1:{s3_port})" in lines["object store"]
    assert lines["mlflow"].startswith(f"mlflow        http://mlflow:***@127.0.0.1:{mlflow_port}")
    assert "FAILED: tracking server unreachable" in lines["mlflow"]
    assert len(printed.strip().splitlines()) == 3  # one line per backend, no tracebacks or retry chatter
    for secret in (DB_PASSWORD, MLFLOW_PASSWORD, AWS_SECRET):
        assert secret not in printed


def test_doctor_on_the_embedded_default_from_the_command_line(astrid_home, capsys):
    first = subprocess.run([sys.executable, "-m", "astrid_assets.cli", "doctor"], capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 1 and "FAILED: not migrated" in first.stdout  # the exit code reaches the shell
    code, lines, printed = doctor(capsys, "--migrate")
    assert code == 0, printed
    assert [line.split("  ")[-1].split(":")[0] for line in lines.values()] == ["OK", "OK", "OK"]
    assert not list((astrid_home / "objects").rglob("*probe*"))


def test_doctor_reports_schema_drift_and_an_unwritable_mlflow_store(astrid_home, monkeypatch, capsys):
    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    assert doctor(capsys, "--migrate")[0] == 0
    with engine_for(url).begin() as connection:
        connection.execute(sa.text("ALTER TABLE calibrated_frames DROP COLUMN depth_mag"))
    (astrid_home / "not-a-folder").write_text("a file where the MLflow store should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (astrid_home / "not-a-folder" / "mlruns").as_uri())
    code, lines, _ = doctor(capsys)
    assert code == 1
    assert "FAILED: reachable but the tables differ from the declared schema: calibrated_frames lacks depth_mag" \
        in lines["database"]
    assert "FAILED: file store not writable:" in lines["mlflow"] and "is not a folder" in lines["mlflow"]
    assert "OK" in lines["object store"]


def test_doctor_fails_an_http_server_that_is_not_mlflow(astrid_home, monkeypatch, capsys):
    with not_mlflow_server() as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        code, lines, _ = doctor(capsys, "--migrate")
    assert code == 1
    assert lines["mlflow"].endswith("FAILED: GET /health answered HTTP 404")
    assert "OK" in lines["database"] and "OK" in lines["object store"]


def test_dagsters_alembic_version_in_the_same_database_is_left_alone(astrid_home, capsys):
    """Dagster's storage keeps its revision in alembic_version; AstrID's migrations use their own table."""
    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    with engine_for(url).begin() as connection:
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(sa.text("INSERT INTO alembic_version VALUES ('29b539ebc72a')"))
    code, lines, _ = doctor(capsys, "--migrate")
    assert "OK" in lines["database"], lines["database"]
    with engine_for(url).connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "29b539ebc72a"
        revision = connection.execute(sa.text("SELECT version_num FROM astrid_alembic_version")).scalar_one()
        assert revision == alembic_head()
        assert sa.inspect(connection).has_table("validations")


def test_doctor_migrate_renames_the_candidate_score_column_of_an_older_astrid(astrid_home, capsys):
    """An older AstrID stored the rule score in ``candidate_detections.score``; ``--migrate`` renames it."""
    from astrid_assets_tests.io.test_migrations import old_candidate_table

    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    old = old_candidate_table()
    with engine_for(url).begin() as connection:
        old.create(connection)
        connection.execute(old.insert(), [{"night": "2024-01-06", "candidate_id": "c", "frame_id": "F", "field": "F01",
                                           "score": 0.75}])
    code, lines, _ = doctor(capsys, "--migrate")
    assert "OK" in lines["database"], lines["database"]
    with engine_for(url).connect() as connection:
        assert connection.execute(sa.text("SELECT rule_score FROM candidate_detections")).scalar_one() == 0.75
        assert "score" not in {column["name"] for column in sa.inspect(connection).get_columns("candidate_detections")}
