"""asyncphp's benchmark: figures beside nginx + wrk on the same pool. Run it with benchmarks/run."""
