"""Pure, vectorized detectors over numpy arrays (issue #3)."""
