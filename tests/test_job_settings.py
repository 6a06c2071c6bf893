"""Job settings on a Scheduler job's URI (workflows_runner/job_settings.py, docs/alerts.md): what
each reads as, the defaults, and one clear error per bad value. That the proxy accepts every setting on a
delivery is shown end to end (tests/test_audit_e2e.py: its jobs' URIs carry them all)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from workflows_runner import job_settings
from workflows_runner.errors import WfrError

PROXY = "https://wr-proxy-abc-ew.a.run.app"
PATH = f"{PROXY}/v1/projects/demo-proj/locations/europe-west1/workflows/sales/executions"


def test_a_uri_without_settings_takes_the_defaults():
    settings = job_settings.from_uri(PATH)
    assert settings.workflow == "projects/demo-proj/locations/europe-west1/workflows/sales"
    assert (settings.timezone, settings.reprocess, settings.deadline, settings.since) == ("Etc/UTC", None, None, None)
    assert settings.grace == timedelta(minutes=10) and settings.lookback == timedelta(days=2)


def test_every_setting_reads_as_written():
    settings = job_settings.from_uri(f"{PATH}?timezone=Etc/GMT%2B5&reprocess=failed&deadline=PT1H30M"
                                     "&since=2026-03-01T01:00:00%2B01:00&grace=PT90S&lookback=P1W2D")
    assert settings.timezone == "Etc/GMT+5" and settings.reprocess == "failed"
    assert settings.deadline == timedelta(hours=1, minutes=30)
    assert settings.since == datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)
    assert settings.grace == timedelta(seconds=90) and settings.lookback == timedelta(days=9)


@pytest.mark.parametrize("query, message", [
    ("deadline=1h", "deadline must be an ISO 8601 duration"),
    ("deadline=P", "deadline must be an ISO 8601 duration"),
    ("deadline=PT", "deadline must be an ISO 8601 duration"),
    ("deadline=P1Y", "deadline must be an ISO 8601 duration"),   # years and months vary in length
    ("grace=P1DT", "grace must be an ISO 8601 duration"),
    ("lookback=P-1D", "lookback must be an ISO 8601 duration"),
    ("lookback=P١D", "lookback must be an ISO 8601 duration"),  # Arabic-Indic digit
    ("since=2026-03-01", "since must be an RFC 3339 date-time with an offset"),
    ("since=2026-03-01T00:00:00", "since must be an RFC 3339 date-time with an offset"),
    ("reprocess=all", "reprocess must be one of none, failed, completed"),
    ("overdue=PT1H", "'overdue' is not a job setting"),
    ("deadline=PT1H&deadline=PT2H", "'deadline' is given more than once"),
])
def test_a_bad_setting_is_one_clear_error(query, message):
    with pytest.raises(WfrError, match=message):
        job_settings.from_uri(f"{PATH}?{query}")


def test_a_uri_that_is_not_the_proxys_is_refused():
    with pytest.raises(WfrError, match="is not a proxy URL"):
        job_settings.from_uri("https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows")


def test_since_defaults_to_when_the_job_last_changed():
    settings = job_settings.from_uri(PATH)
    assert settings.first_time({"userUpdateTime": "2026-03-01T10:00:00.123Z"}) == \
        datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert settings.first_time({}) is None
    explicit = job_settings.from_uri(f"{PATH}?since=2026-01-01T00:00:00Z")
    assert explicit.first_time({"userUpdateTime": "2026-03-01T10:00:00Z"}) == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_targets_only_the_proxys_own_urls():
    assert job_settings.targets(PATH, PROXY) and job_settings.targets(PATH, PROXY + "/")
    assert not job_settings.targets(PATH, "https://wr-proxy-abc-ew.a.run.app.evil.example")
    assert not job_settings.targets("https://other.example/v1/x", PROXY)



# ---- Overlap and failure policies: one table for wfr's reader and the proxy's (docs/proxy.md) --
from tests.test_twins import MAINS  # noqa: E402  (the proxy's modules, loaded in process)

PROXY_POLICY = MAINS["proxy"].policy
# query -> (overlap, maxActive, pauseAfter), or the error both readers give
POLICY_TABLE = [
    ("", ("allow", 0, 0)),
    ("overlap=allow", ("allow", 0, 0)),
    ("overlap=skip", ("skip", 1, 0)),
    ("overlap=queue&maxActive=2", ("queue", 2, 0)),
    ("overlap=replace&maxActive=100&pauseAfter=3", ("replace", 100, 3)),
    ("pauseAfter=1", ("allow", 0, 1)),
    ("overlap=Skip", "overlap must be one of allow, skip, queue, replace"),
    ("overlap=forbid", "overlap must be one of allow, skip, queue, replace"),
    ("maxActive=2", "maxActive applies only with overlap=skip, queue or replace"),
    ("overlap=skip&maxActive=0", "maxActive must be a whole number from 1 to 100"),
    ("overlap=skip&maxActive=101", "maxActive must be a whole number from 1 to 100"),
    ("overlap=skip&maxActive=01", "maxActive must be a whole number from 1 to 100"),
    ("overlap=skip&maxActive=%D9%A1", "maxActive must be a whole number from 1 to 100"),  # Arabic-Indic 1
    ("pauseAfter=-1", "pauseAfter must be a whole number from 1 to 100"),
    ("pauseAfter=", "pauseAfter must be a whole number from 1 to 100"),
]


@pytest.mark.parametrize("query, expected", POLICY_TABLE)
def test_wfr_reads_the_overlap_settings_as_the_proxy_does(query, expected):
    from urllib.parse import parse_qsl
    from werkzeug.datastructures import MultiDict
    args = MultiDict(parse_qsl(query, keep_blank_values=True))
    uri = f"{PATH}?{query}" if query else PATH
    if isinstance(expected, tuple):
        settings = job_settings.from_uri(uri)
        assert (settings.overlap, settings.max_active, settings.pause_after) == expected
        assert tuple(PROXY_POLICY.from_args(args)) == expected
    else:
        with pytest.raises(WfrError, match=expected):
            job_settings.from_uri(uri)
        with pytest.raises(Exception, match=expected) as raised:
            PROXY_POLICY.from_args(args)
        assert getattr(raised.value, "code", None) == 400
