"""``python -m tests.benchmarks``: run the whole benchmark once (see :mod:`tests.benchmarks.run`)."""

from tests.benchmarks.run import main

if __name__ == "__main__":
    main()
