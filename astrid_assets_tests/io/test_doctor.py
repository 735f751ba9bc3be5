"""``astrid doctor`` against real servers (PostgreSQL, moto's S3, an HTTP /health endpoint) and closed ports."""

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
from astrid_assets_tests import servers

pytestmark = pytest.mark.integration

DB_PASSWORD = "DoctorDbPassw0rd-QUUX"
MLFLOW_PASSWORD = "DoctorMlflowPw-GRAULT"
AWS_SECRET = "DoctorAwsSecret-GARPLY"


@contextmanager
def health_server():
    """A stand-in MLflow tracking server: ``GET /health`` answers 200 OK; yields its URL."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            ok = self.path.split("?")[0].rstrip("/").endswith("/health")
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"not found")

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def doctor(capsys, *args: str) -> tuple[int, dict[str, str], str]:
    """Exit code, the line of each backend, and everything printed."""
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    lines = {line.split()[0] if not line.startswith("object store") else "object store": line
             for line in captured.out.splitlines() if line.strip()}
    return code, lines, captured.out + captured.err


def test_doctor_on_real_servers_reports_not_migrated_then_migrates(s3_endpoint, monkeypatch, capsys):
    bucket = f"astrid-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    with servers.postgres_database(prefix="astrid_doctor") as url, health_server() as mlflow:
        url_with_password = make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
        monkeypatch.setenv("ASTRID_DATABASE_URL", url_with_password)  # trust auth: accepted
        monkeypatch.setenv("ASTRID_OBJECT_STORE", f"s3://{bucket}/astrid")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow)
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
            assert lines["database"].endswith(f"OK: reachable, all {len(metadata.tables)} tables present")
            assert make_url(url_with_password).render_as_string(hide_password=True) in lines["database"]
        finally:
            engine_for(url_with_password).dispose()
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # the probes were deleted
    for text in (printed, migrated, again):
        assert DB_PASSWORD not in text


def test_doctor_on_closed_ports_fails_each_backend_with_a_redacted_reason(monkeypatch, capsys):
    database_port, s3_port, mlflow_port = (servers.free_port() for _ in range(3))
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


def test_doctor_on_the_embedded_default_from_the_command_line(astrid_home):
    command = [sys.executable, "-m", "astrid_assets.cli", "doctor"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1 and "FAILED: not migrated" in first.stdout
    migrated = subprocess.run([*command, "--migrate"], capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert [line.split("  ")[-1].split(":")[0] for line in migrated.stdout.splitlines()] == ["OK", "OK", "OK"]
    assert not list((astrid_home / "objects").rglob("*probe*"))


def test_doctor_reports_schema_drift_and_an_unwritable_mlflow_store(astrid_home, monkeypatch, capsys):
    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    metadata.create_all(engine_for(url))
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
