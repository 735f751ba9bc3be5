"""A scanning page over a temporary SQLite database and object folder holding one generated night."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

NIGHT = "2024-01-05"
PASSWORD = "correct horse battery"


@dataclass
class Site:
    url: str
    objects: Path
    app: object
    candidates: object  #: the rows written

    def client(self, peer: str = "testclient"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient
        return TestClient(self.app, client=(peer, 50000))

    def sign_in(self, name: str, password: str = PASSWORD, peer: str = "testclient"):
        client = self.client(peer)
        page = client.get("/signin")
        response = client.post("/signin", data={"name": name, "password": password, "next": "/queue",
                                                "csrf_token": token(page.text)})
        assert response.status_code == 200 and response.url.path == "/queue", response.text
        return client


def token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def site(astrid_home, monkeypatch) -> Site:
    from astrid_assets.review.app import create_app
    from astrid_assets.testing.review_data import write_candidates

    monkeypatch.setenv("ASTRID_REVIEW_SECRET", "test-only-session-key")
    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    objects = astrid_home / "objects"
    candidates = write_candidates(url, str(objects), NIGHT, 12, probabilities=[0.05 + 0.08 * i for i in range(12)],
                                  model_version="7")
    app = create_app(url, str(objects))
    app.state.records.add_person("ana", PASSWORD, "labeller")
    app.state.records.add_person("eve", PASSWORD, "expert")
    return Site(url, objects, app, candidates)
