"""`python -m trainlab` is the same as the `trainlab` console script."""

from trainlab.cli import main

raise SystemExit(main())
