"""wfr: the operator's command line for workflows-runner (docs/cli.md)."""
