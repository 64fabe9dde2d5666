"""Ray Tune function trainables: the only package that imports ray (filled by the sweep service)."""
