"""ember: a Python model compiler."""
