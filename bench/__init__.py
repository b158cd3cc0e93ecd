"""Performance benchmarks behind `make bench`; results go to results/bench/ (JSON + Markdown)."""
