"""Demo suites beside the main demo: each a module with ``main(argv) -> int`` (e.g. :mod:`.long`)."""
