"""Load tests (locust scenarios) and the one-run benchmark; see loadtests/RESULTS.md."""
