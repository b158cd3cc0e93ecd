"""Classification transfer: frozen features, linear probes, kNN."""
