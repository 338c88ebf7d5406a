"""Options of the pytest-benchmark suite."""


def pytest_addoption(parser):
    parser.addoption(
        "--compile-max-steps",
        type=int,
        default=None,
        help="longest sequence the torch.compile'd loop is compiled for; default 128 when benchmarking, "
        "0 (skip it) with --benchmark-disable, where compiling would dwarf the one call the smoke test makes",
    )
