"""The alert rules and the Grafana dashboard in deploy/ are valid: promtool checks and unit tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "bouncegw.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "bouncegw.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "bouncegw.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    need(exe is not None, "promtool not installed (Debian package 'prometheus')")
    assert exe is not None
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_example_config() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.example.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "needle",
    [
        "BouncegwDown",
        "BouncegwRelayFailureRatio",
        "BouncegwNextHopUnreachable",
        "BouncegwDatabaseErrors",
        "BouncegwJournalGrowing",
        "BouncegwFamilyRateAboveBaseline",
    ],
)
def test_every_required_alert_is_unit_tested(needle: str) -> None:
    assert f"alert: {needle}" in RULES.read_text()
    assert f"alertname: {needle}" in RULE_TESTS.read_text()


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "bouncegw" and "id" not in dashboard  # no instance-specific id
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("histogram_quantile" in e and "bouncegw_relay_duration_seconds_bucket" in e for e in exprs)
    assert any("sum by (variant)" in e and "bouncegw_family_recipients_total" in e for e in exprs)
    # every panel reads the data source chosen in the variable, so the import needs no mapping
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row")
    # no two panels overlap on the grid
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
