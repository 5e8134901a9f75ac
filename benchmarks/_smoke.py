"""`--smoke` for every benchmark: tiny sizes that run in seconds, so that tests/test_benchmarks_smoke.py
proves each script still runs end to end. A smoke run's numbers mean nothing; its bars are not judged."""

HELP = "tiny sizes, seconds: only proves the script runs (tests/test_benchmarks_smoke.py); numbers mean nothing"


def add_smoke(parser):
    parser.add_argument("--smoke", action="store_true", help=HELP)


def smoke_sizes(opts, **tiny):
    """With --smoke, replace the options named in `tiny` by those values; returns `opts`."""
    if getattr(opts, "smoke", False):
        for name, value in tiny.items():
            setattr(opts, name, value)
    return opts
