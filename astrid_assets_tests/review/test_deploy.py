"""The scanning page in docker-compose.yaml: behind its trusted proxy, never published itself."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_is_reached_only_through_the_proxy_that_names_people():
    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    review, proxy = services["review"], services["review-proxy"]
    assert review["command"][:2] == ["astrid", "review"] and not review.get("ports")
    environment = review["environment"]
    assert environment["ASTRID_REVIEW_USER_HEADER"] == "X-Forwarded-User"
    assert environment["ASTRID_REVIEW_TRUSTED_PROXIES"] == "review-proxy"
    assert environment["ASTRID_REVIEW_SECRET"].startswith("${ASTRID_REVIEW_SECRET")
    assert [str(port) for port in proxy["ports"]] == ["127.0.0.1:${ASTRID_REVIEW_PORT:-8765}:8080"]
    config = (ROOT / "deploy/review-proxy/nginx.conf").read_text()
    # the proxy replaces whatever X-Forwarded-User a client sent with the name it authenticated
    assert "proxy_set_header X-Forwarded-User $remote_user;" in config
    assert "auth_basic_user_file /etc/nginx/review/htpasswd;" in config
    assert "proxy_pass http://review:8765;" in config
