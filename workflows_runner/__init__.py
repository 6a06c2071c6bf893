"""wfr: the operator's command line for workflows-runner (docs/cli.md)."""
import zoneinfo

# One time-zone database for every piece (docs/range.md#time-zone-data): the pinned tzdata package,
# never the host's zoneinfo, which Python would read first. Here, before any module of wfr runs.
zoneinfo.reset_tzpath(to=[])
