"""Side-by-side benchmarks (`make bench`): training throughput against keras-hub and plain Keras peers,
greedy-generation latency of every inference path, and the HTTP server under load.

keras-hub is a benchmark-only extra (`pip install -e ".[bench]"`); without it the keras-hub peer is
skipped and the rest still runs.
"""
